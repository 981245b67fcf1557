"""The page in a real browser against the whole stack: gateway, Redis, a worker, Triton.

A GRID clip is uploaded through the file picker and another analysed by URL; the page
must show the stages advance, then the verdict with every evidence image loaded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.folder_server import serve_folder
from cli.stack import Stack
from dfd.settings import Settings
from tests.fixtures.browser import shot

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.browser]

CLIP = "grid/bbaf2n.mpg"
ADMIN = "admin-key-of-the-e2e-console"
VERDICTS = re.compile("Likely manipulated|No sign of manipulation found|Inconclusive")
WATCH_PROGRESS = """() => {
  window.seen = [];
  const el = document.getElementById('progress-text');
  new MutationObserver(() => {
    if (window.seen[window.seen.length - 1] !== el.textContent) window.seen.push(el.textContent);
  }).observe(el, {childList: true, characterData: true, subtree: true});
}"""


@pytest.fixture(scope="module")
def stack(triton, browser, tmp_path_factory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("browser-e2e")
    mp = pytest.MonkeyPatch()
    mp.setenv("DFD_DATA_DIR", str(data_dir))
    mp.setenv("DFD_TRITON_URL", triton.grpc_url)
    mp.setenv("DFD_FETCH_ALLOWED_NETWORKS", '["127.0.0.1/32"]')
    mp.setenv("DFD_LOG_JSON", "false")
    mp.setenv("DFD_ADMIN_KEYS", f'["{ADMIN}"]')
    mp.delenv("DFD_REDIS_URL", raising=False)
    log = (data_dir / "stack.log").open("wb")
    try:
        with Stack(Settings(), port=0, workers=1, child_output=log, log=lambda _: None) as running:
            assert running.endpoints is not None
            yield running.endpoints.gateway
    finally:
        log.close()
        mp.undo()


def follow_to_verdict(page, name: str) -> list[str]:
    """Wait for the verdict; every image loaded; the progress lines the page showed."""
    page.get_by_role("heading", name=VERDICTS).wait_for(timeout=300_000)
    page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
    widths = page.eval_on_selector_all("#result img", "els => els.map(e => e.naturalWidth)")
    assert len(widths) >= 3 and all(w > 0 for w in widths), widths
    assert page.locator("svg.timeline circle").count() == 3  # a 3 s clip, one point a second
    shot(page, name)
    return page.evaluate("() => window.seen")


def advancing(seen: list[str]) -> list[int]:
    """The overall percentages the page showed, in order."""
    return [int(m.group(1)) for line in seen if (m := re.search(r"\((\d+)% overall\)", line))]


def test_upload_a_grid_clip_and_watch_it_through(stack, open_page, media_dir: Path) -> None:
    page = open_page(stack, "/")
    page.evaluate(WATCH_PROGRESS)
    page.set_input_files("#file", str(media_dir / CLIP))
    page.get_by_role("button", name="Check this file").click()
    seen = follow_to_verdict(page, "e2e-upload-result")
    shown = advancing(seen)
    assert shown, seen  # at least one active stage was shown
    assert shown == sorted(shown), seen


def test_analyse_a_url_through_the_page(stack, open_page, media_dir: Path) -> None:
    with serve_folder(media_dir) as base:
        page = open_page(stack, "/")
        page.evaluate(WATCH_PROGRESS)
        page.get_by_label("Address of a video or a video page").fill(f"{base}/{CLIP}")
        page.get_by_role("button", name="Check this address").click()
        follow_to_verdict(page, "e2e-url-result")


def test_the_console_shows_the_real_worker_and_the_jobs_it_did(stack, open_page) -> None:
    """After the two analyses above: one worker, idle, and both jobs completed."""
    page = open_page(stack, "/console")
    page.get_by_label("Admin key (DFD_ADMIN_KEYS)").fill(ADMIN)
    page.keyboard.press("Enter")
    page.locator("#workers tbody tr[data-worker]").wait_for()
    assert page.locator("#workers tbody tr[data-worker]").count() == 1
    assert page.inner_text("#workers tbody tr[data-worker] td:nth-of-type(1)") == "idle"
    assert page.inner_text("[data-queue=default] td:nth-of-type(5)") == "2"  # completed
    assert "2 completed, 0 failed in the last hour" in page.inner_text("#hour-summary")
    rows = page.locator("#jobs tbody tr[data-status=completed]")
    assert rows.count() == 2
    shot(page, "e2e-console")
