"""A cap on request bodies the gateway buffers whole (JSON), enforced while they arrive.

FastAPI reads a JSON body completely before any validation runs, so without a cap a
client could make the gateway hold gigabytes in memory to learn that its URL is too
long. Uploads are exempt: they are streamed to disk under their own cap
(:mod:`gateway.uploads`), as are multipart bodies on the ``exempt_multipart`` paths (a
batch of files, :mod:`gateway.batch_uploads`).
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import problem_response

# An analyze request is a URL of at most 4 KiB and a priority.
MAX_BODY_BYTES = 64 * 1024


class BodyLimitMiddleware:
    """``413`` for a body over ``max_bytes``: at once when declared, else while streamed."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = MAX_BODY_BYTES,
        exempt: Collection[str] = (),
        exempt_multipart: Collection[str] = (),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = frozenset(exempt)
        self.exempt_multipart = frozenset(exempt_multipart)

    def _detail(self, got: str) -> str:
        return f"request: expected a body of at most {self.max_bytes} bytes, got {got}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope.get("path") in self.exempt_multipart and headers.get(
            "content-type", ""
        ).lower().startswith("multipart/form-data"):
            await self.app(scope, receive, send)
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = problem_response(
                413, "too-large", self._detail(declared), scope.get("path"), {"Connection": "close"}
            )
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised into the body read: the app's HTTP error handler answers it.
                    raise HTTPException(413, self._detail("more"), {"Connection": "close"})
            return message

        await self.app(scope, limited_receive, send)
