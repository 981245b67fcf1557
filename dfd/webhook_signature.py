"""How dfd signs a webhook, and how a receiver checks it (standard library only).

A delivery carries ``X-DFD-Timestamp: <unix seconds>`` and
``X-DFD-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`` keyed with
``DFD_WEBHOOK_SECRET``. A receiver recomputes the HMAC over the raw body it got, compares
in constant time, and refuses timestamps far from its clock (a replayed delivery).
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-DFD-Timestamp"
SIGNATURE_HEADER = "X-DFD-Signature"
DEFAULT_TOLERANCE_S = 300


def signature(secret: bytes, timestamp: int | str, body: bytes) -> str:
    """``sha256=<hex>`` for one delivery."""
    message = str(timestamp).encode() + b"." + body
    return "sha256=" + hmac.new(secret, message, hashlib.sha256).hexdigest()


def headers(secret: bytes, body: bytes, now: float | None = None) -> dict[str, str]:
    """The two headers of a delivery of ``body``, signed now."""
    timestamp = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify(
    secret: bytes | str,
    timestamp: str | None,
    sig: str | None,
    body: bytes,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Whether ``sig`` signs ``body`` at ``timestamp`` with ``secret``, within ``tolerance_s``."""
    if not timestamp or not sig or not timestamp.strip().isdigit():
        return False
    key = secret.encode() if isinstance(secret, str) else secret
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(signature(key, timestamp.strip(), body), sig.strip())
