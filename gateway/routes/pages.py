"""The web page (``/``, ``/r/{id}``), the operator console (``/console``) and the API docs.

Everything is served from this package (``gateway/static``) or from a wheel
(``fastapi_offline`` ships Swagger UI and ReDoc), so the pages work on a machine with no
internet. The HTML is static apart from a few ``data-*`` attributes filled in here:
the decision threshold and inconclusive band the verdict is drawn against, whether the
API wants a bearer key, whether server-sent progress exists (else the page polls), and
the worker's stages in order.
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.routing import NoMatchFound

from dfd.states import Stage
from gateway.deps import State

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
STATIC_URL = "/static"
DOCS_ASSETS_URL = "/static/docs"
EVENTS_ROUTE_NAME = "job_events"  # gateway.routes.events

# The pages load nothing from elsewhere; a browser enforces it.
CSP = (
    "default-src 'self'; img-src 'self' data: blob: https: http:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
# Swagger UI and ReDoc write inline scripts and styles of their own.
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'"
)

router = APIRouter(include_in_schema=False)


@cache
def _template(name: str) -> str:
    return (STATIC_DIR / name).read_text(encoding="utf-8")


def _page(name: str, request: Request, state: State) -> HTMLResponse:
    settings = state.settings
    try:  # by name: routers included into the app are not listed flat in app.routes
        request.app.url_path_for(EVENTS_ROUTE_NAME, job_id="x")
        events = True
    except NoMatchFound:
        events = False
    values = {
        "threshold": f"{settings.threshold:g}",
        "band": f"{settings.inconclusive_band:g}",
        "auth": "1" if state.api_keys else "0",
        "events": "1" if events else "0",
        "stages": ",".join(stage.value for stage in Stage),
    }
    body = _template(name)
    for key, value in values.items():
        body = body.replace("{{" + key + "}}", html.escape(value, quote=True))
    return HTMLResponse(
        body,
        headers={
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )


@router.get("/", response_class=HTMLResponse)
def index(request: Request, state: State) -> HTMLResponse:
    """Submit a video (file or URL), follow its progress, read the result."""
    return _page("index.html", request, state)


@router.get("/r/{job_id}", response_class=HTMLResponse)
def shared_result(job_id: str, request: Request, state: State) -> HTMLResponse:
    """A shareable result link: the same page, opened on one job."""
    return _page("index.html", request, state)


@router.get("/console", response_class=HTMLResponse)
def console(request: Request, state: State) -> HTMLResponse:
    """The operator console; its data comes from ``/api/admin`` with an admin key."""
    return _page("console.html", request, state)


def _docs_headers(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response


# ReDoc's bundle shows a logo from its vendor's CDN in the sidebar footer, with no option
# to turn it off: served with our own icon in its place, nothing is fetched from outside.
REDOC_BUNDLE = "redoc.standalone.js"
REDOC_REMOTE_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@cache
def _redoc_bundle() -> bytes:
    text = (Path(_docs_assets()) / REDOC_BUNDLE).read_text(encoding="utf-8")
    return text.replace(REDOC_REMOTE_LOGO, f"{STATIC_URL}/favicon.svg").encode()


def install(app: FastAPI) -> None:
    """Mount the static folders and add the pages and the offline ``/docs`` and ``/redoc``."""

    # Before the mount below, so this one file is served patched.
    @app.get(f"{DOCS_ASSETS_URL}/{REDOC_BUNDLE}", include_in_schema=False)
    def redoc_bundle() -> Response:
        return Response(
            _redoc_bundle(),
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=3600"},
        )

    app.mount(STATIC_URL + "/docs", StaticFiles(directory=_docs_assets()), name="docs-assets")
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(router)
    title = app.title
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return _docs_headers(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{title}: API (Swagger UI)",
                oauth2_redirect_url=oauth2_redirect,
                swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png",
                # No badge from the public validator service: nothing leaves the machine.
                swagger_ui_parameters={"validatorUrl": None},
            )
        )

    @app.get(oauth2_redirect, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return _docs_headers(get_swagger_ui_oauth2_redirect_html())

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return _docs_headers(
            get_redoc_html(
                openapi_url=openapi_url,
                title=f"{title}: API (ReDoc)",
                redoc_js_url=f"{DOCS_ASSETS_URL}/{REDOC_BUNDLE}",
                redoc_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png",
                with_google_fonts=False,
            )
        )


def _docs_assets() -> str:
    """Swagger UI's and ReDoc's files as the ``fastapi-offline`` wheel ships them."""
    return str(resources.files("fastapi_offline") / "static")
