"""The page, the console and the API docs as the gateway serves them: local assets only."""

from __future__ import annotations

import re

import pytest

from dfd.states import Stage
from gateway.routes.pages import STATIC_DIR

pytestmark = pytest.mark.integration

# An absolute address to anywhere: the pages and their scripts must name none.
OUTSIDE = re.compile(
    r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//|url\(\s*[\"']?(?:https?:)?//|@import"
)


@pytest.mark.parametrize("path", ["/", "/r/0123456789abcdefghijkl", "/console"])
def test_pages_are_html_with_a_strict_policy(gateway, path: str) -> None:
    with gateway(threshold=0.6, inconclusive_band=0.05) as client:
        response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "{{" not in response.text
    if path != "/console":
        assert (
            'data-threshold="0.6" data-band="0.05" data-auth="0" data-events="1"' in response.text
        )
        stages = ",".join(stage.value for stage in Stage)
        assert f'data-stages="{stages}"' in response.text


def test_the_page_asks_for_a_key_when_the_api_wants_one(gateway) -> None:
    with gateway(api_keys=["k" * 20]) as client:
        assert 'data-auth="1"' in client.get("/").text


def test_every_asset_the_pages_name_is_served(gateway) -> None:
    with gateway() as client:
        for page in ("/", "/console"):
            html = client.get(page).text
            assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
            assert len(assets) >= 3, page
            for asset in assets:
                assert client.get(asset).status_code == 200, asset


def test_no_asset_points_outside() -> None:
    files = sorted(STATIC_DIR.iterdir())
    assert {f.suffix for f in files} >= {".html", ".css", ".js", ".svg"}
    for file in files:
        text = file.read_text()
        assert not OUTSIDE.search(text.replace('xmlns="http://www.w3.org/2000/svg"', "")), file.name


def test_docs_and_redoc_use_local_assets(gateway) -> None:
    with gateway() as client:
        for path, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
            html = client.get(path).text
            assert f"/static/docs/{asset}" in html
            assert "cdn" not in html.lower() and "fonts.googleapis" not in html
            assert client.get(f"/static/docs/{asset}").status_code == 200
        assert client.get("/docs/oauth2-redirect").status_code == 200
        redoc = client.get("/static/docs/redoc.standalone.js").text
        assert "cdn.redoc.ly" not in redoc and "/static/favicon.svg" in redoc
        schema = client.get("/openapi.json").json()
    assert "/api/admin/jobs" in schema["paths"]
    assert "/" not in schema["paths"] and "/console" not in schema["paths"]


def test_an_unknown_static_file_is_a_404(gateway) -> None:
    with gateway() as client:
        response = client.get("/static/nope.js")
    assert response.status_code == 404
