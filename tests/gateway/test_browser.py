"""The page and the console in a real browser (Debian's chromium through Playwright).

A real gateway (uvicorn, real Redis) serves them; jobs are put into Redis as a worker
leaves them (``tests.gateway.jobstore``), so no worker or Triton runs here: the test
moves a job through its states and the page must follow. Each page may reach only the
gateway, and a console error, page error or failed request fails the test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rq.job import Job

from dfd.known_fakes import BANK_KEY, FrameHash, MediaHashes, job_hashes_key
from dfd.settings import Settings
from dfd.states import Stage
from gateway.queue import SERIALIZER
from tests.fixtures.browser import DESKTOP, PHONE, UNLABELLED_CONTROLS, fits_width, shot
from tests.gateway import jobstore
from tests.gateway.conftest import GatewayServer

pytestmark = [pytest.mark.integration, pytest.mark.browser]

ADMIN = "admin-key-for-the-browser-test"


@pytest.fixture(scope="module")
def server(redis_server, tmp_path_factory) -> Iterator[GatewayServer]:
    """One gateway for the module (starting one costs seconds); each test's ``redis``
    fixture empties its database, so no test sees another's jobs."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("browser-data"),
        redis_url=redis_server.url,
        url_signing_key="k" * 32,
        admin_keys=[ADMIN],
        events_max_s=2.0,  # streams end soon, so the page's reconnects are exercised
    )
    gateway = GatewayServer(settings).start()
    try:
        yield gateway
    finally:
        gateway.stop()


def completed_job(server, redis) -> Job:
    job = jobstore.enqueue(redis, server.settings)
    jobstore.finish(job, jobstore.result_with_evidence(server.settings, job.id, server.url))
    return job


def images_loaded(page) -> list[tuple[str, int]]:
    return page.eval_on_selector_all(
        "#result img",
        "els => els.map(e => [e.getAttribute('alt'), e.complete ? e.naturalWidth : -1])",
    )


def test_result_view_timeline_share_json_and_print(server, redis, open_page, tmp_path) -> None:
    job = completed_job(server, redis)
    page = open_page(server.url, f"/r/{job.id}")
    page.get_by_role("heading", name="Likely manipulated").wait_for()
    assert "87%" in page.inner_text(".confidence")
    # Each detector says whether it ran; the unused ones say why not.
    assert page.inner_text("[data-detector=visual] .detector-score") == "91%"
    assert "Not used" in page.inner_text("[data-detector=audio]")
    assert "6 frames examined, one for each second." in page.inner_text(".examined")
    page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
    loaded = images_loaded(page)
    assert len(loaded) == 1 + 2 + 2 + 1  # readout frame, 2 frames, 2 heatmaps, chart (details)
    assert all(width > 0 for _, width in loaded), loaded
    # The readout opens on the most suspicious second (5 s); hovering 3 s shows that frame.
    assert "At 5.0 s (frame 125)" in page.inner_text("#timeline-readout")
    page.locator("svg.timeline circle").nth(3).hover()  # the point of second 3
    page.wait_for_function(
        "() => document.querySelector('#timeline-readout').textContent.includes('At 3.0 s')"
    )
    assert "faces: 92%" in page.inner_text("#timeline-readout")
    assert page.locator("#timeline-readout img").get_attribute("src").count("_f75.jpg") == 1
    # The keyboard moves it too.
    page.locator("svg.timeline").focus()
    page.keyboard.press("ArrowLeft")
    assert "At 2.0 s" in page.inner_text("#timeline-readout")
    assert "No picture kept" in page.inner_text("#timeline-readout")
    page.keyboard.press("End")
    assert "At 5.0 s" in page.inner_text("#timeline-readout")
    shot(page, "result-1280")
    assert page.evaluate(UNLABELLED_CONTROLS) == []

    with page.expect_download() as download:
        page.click("#download-json")
    saved = json.loads(Path(download.value.path()).read_text())
    assert saved["jobId"] == job.id and saved["result"]["confidence"] == 0.87

    # The printable report: print media shows every evidence image, the controls go.
    page.emulate_media(media="print")
    assert page.locator(".actions").is_hidden() and page.locator("svg.timeline").is_visible()
    assert page.locator(".frames img").count() == 4
    shot(page, "result-print")
    pdf = tmp_path / "report.pdf"
    page.pdf(path=str(pdf))
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 20_000

    # The shared link, in a fresh context (nothing carried over), at phone width.
    link = page.input_value("#share-link")
    assert link == f"{server.url}/r/{job.id}"
    phone = open_page(server.url, link.removeprefix(server.url), width=PHONE)
    phone.get_by_role("heading", name="Likely manipulated").wait_for()
    phone.wait_for_function(
        "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
    )
    assert fits_width(phone) == (PHONE, PHONE)
    shot(phone, "result-375")


def test_submit_a_url_and_follow_its_progress(server, redis, open_page) -> None:
    page = open_page(server.url, "/")
    assert page.evaluate(UNLABELLED_CONTROLS) == []
    # With the keyboard alone: tab to the address field, type, Enter.
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == "url":
            break
    assert page.evaluate("() => document.activeElement.id") == "url"
    page.keyboard.type("http://93.184.216.34/clip.mp4")
    page.keyboard.press("Enter")
    page.wait_for_url("**/r/*")
    page.get_by_text("Waiting for a free worker").wait_for()
    job_id = page.url.rsplit("/", 1)[1]
    assert f"{server.url}/r/{job_id} shows the result" in page.inner_text("#progress-link")
    job = Job.fetch(job_id, connection=redis, serializer=SERIALIZER)
    assert job.args[0]["source"]["url"] == "http://93.184.216.34/clip.mp4"
    jobstore.start(job, "faces", 0.5)
    stages = [stage.value for stage in Stage]
    overall = int((stages.index("faces") + 0.5) / len(stages) * 100 + 0.5)
    page.get_by_text(f"Finding faces ({overall}% overall)").wait_for()
    assert page.locator("[data-stage=decode]").get_attribute("class") == "stage stage-done"
    assert page.locator("[aria-current=step]").get_attribute("data-stage") == "faces"
    shot(page, "progress-1280")
    jobstore.start(job, "infer", 0.5)
    page.locator("#progress-text", has_text="Running the detectors").wait_for()
    jobstore.finish(job, jobstore.result_with_evidence(server.settings, job.id, server.url))
    page.get_by_role("heading", name="Likely manipulated").wait_for()


def test_upload_by_picker_and_by_drop_and_see_errors(
    server, redis, open_page, page_log, small_videos
) -> None:
    page_log.allow("status of 415")  # the text file, refused as it must be
    page = open_page(server.url, "/", width=PHONE)
    assert fits_width(page) == (PHONE, PHONE)
    shot(page, "submit-375")
    # Nothing chosen: the page says so and sends nothing.
    page.get_by_role("button", name="Check this file").click()
    assert page.inner_text("#submit-error") == "Choose a video file first."
    page.set_input_files("#file", str(small_videos["mp4"]))
    page.get_by_role("button", name="Check this file").click()
    page.wait_for_url("**/r/*")
    first = page.url.rsplit("/", 1)[1]
    page.get_by_text("Waiting for a free worker").wait_for()

    # Back on the form, a file dropped onto it is sent at once.
    page.go_back()
    page.get_by_role("heading", name="Is this video manipulated?").wait_for()
    data = list(small_videos["webm"].read_bytes())
    transfer = page.evaluate_handle(
        "bytes => { const t = new DataTransfer();"
        " t.items.add(new File([new Uint8Array(bytes)], 'dropped.webm', {type: 'video/webm'}));"
        " return t; }",
        data,
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    page.wait_for_url(lambda url: "/r/" in url and not url.endswith(first))
    second = page.url.rsplit("/", 1)[1]
    kinds = {
        j: Job.fetch(j, connection=redis, serializer=SERIALIZER).args[0]["source"]["filename"]
        for j in (first, second)
    }
    assert kinds == {first: "clip.mp4", second: "dropped.webm"}

    # Not a video: the gateway's own message, shown beside the form.
    page.goto(server.url + "/")
    page.set_input_files(
        "#file", {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello " * 100}
    )
    page.get_by_role("button", name="Check this file").click()
    page.locator("#submit-error").wait_for()
    assert "expected a video" in page.inner_text("#submit-error")


def test_failed_and_unknown_jobs_say_so(server, redis, open_page, page_log) -> None:
    page_log.allow("status of 404")  # the unknown job's lookup, which the page reports
    job = jobstore.enqueue(redis, server.settings)
    jobstore.fail(job, "unsupported-media", "probe: expected a video stream, got none")
    page = open_page(server.url, f"/r/{job.id}")
    page.get_by_role("heading", name="The analysis failed").wait_for()
    assert page.inner_text(".error-box") == "probe: expected a video stream, got none"
    page.goto(server.url + "/r/" + "x" * 22)
    page.get_by_role("heading", name="Result not found").wait_for()


def test_console_lists_jobs_retries_and_cancels(server, redis, open_page) -> None:
    s = server.settings
    failed = jobstore.enqueue(redis, s, "high")
    jobstore.fail(failed)
    waiting = jobstore.enqueue(redis, s, "low")
    completed_job(server, redis)
    page = open_page(server.url, "/console")
    assert page.evaluate(UNLABELLED_CONTROLS) == []
    page.get_by_label("Admin key (DFD_ADMIN_KEYS)").fill(ADMIN)
    page.keyboard.press("Enter")
    page.locator("#panels").wait_for()
    assert page.inner_text("[data-queue=low] td:nth-of-type(1)") == "1"
    assert page.inner_text("[data-queue=high] td:nth-of-type(4)") == "1"  # failed
    assert "1 completed, 1 failed in the last hour" in page.inner_text("#hour-summary")
    assert page.locator("#jobs tbody tr").count() == 3
    shot(page, "console-1280")

    page.select_option("#f-status", "failed")
    page.wait_for_function("() => document.querySelectorAll('#jobs tbody tr').length === 1")
    page.get_by_role("button", name=f"Retry job {failed.id}").click()
    page.wait_for_function(
        "() => document.querySelectorAll('#jobs tbody tr[data-job]').length === 0"
    )
    assert Job.fetch(failed.id, connection=redis, serializer=SERIALIZER).get_status() == "queued"

    page.select_option("#f-status", "waiting")
    page.locator(f"tr[data-job='{waiting.id}']").wait_for()
    page.get_by_role("button", name=f"Cancel job {waiting.id}").click()
    page.wait_for_function(f"() => !document.querySelector(\"tr[data-job='{waiting.id}']\")")
    assert Job.fetch(waiting.id, connection=redis, serializer=SERIALIZER).get_status() == "canceled"
    # The console names it as the job view does, and offers to retry it.
    page.select_option("#f-status", "cancelled")
    row = page.locator(f"tr[data-job='{waiting.id}']")
    row.wait_for()
    assert row.get_attribute("data-status") == "cancelled"
    assert row.locator("td").first.inner_text() == "cancelled"
    assert row.get_by_role("button", name=f"Retry job {waiting.id}").is_visible()

    page.set_viewport_size({"width": PHONE, "height": 900})
    page.select_option("#f-status", "")
    page.wait_for_function("() => document.querySelectorAll('#jobs tbody tr').length === 3")
    assert fits_width(page) == (PHONE, PHONE)
    shot(page, "console-375")


def test_a_wrong_admin_key_is_refused_in_words(server, open_page, page_log) -> None:
    page_log.allow("status of 401")
    page = open_page(server.url, "/console")
    page.get_by_label("Admin key (DFD_ADMIN_KEYS)").fill("not-the-key-at-all")
    page.get_by_role("button", name="Open").click()
    page.locator("#console-error").wait_for()
    assert "expected a known admin key" in page.inner_text("#console-error")
    assert page.locator("#panels").is_hidden()


def test_docs_render_their_operations_offline(server, open_page) -> None:
    page = open_page(server.url, "/docs", width=DESKTOP)
    page.locator(".opblock").first.wait_for()
    summaries = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/api/upload" in " ".join(summaries) and "/api/admin/overview" in " ".join(summaries)
    shot(page, "docs-1280", full_page=False)
    redoc = open_page(server.url, "/redoc")
    redoc.locator("h2", has_text="A job's state, progress and result").wait_for()


def test_result_explains_provenance_metadata_matches_tracks_and_sound(
    server, redis, open_page
) -> None:
    job = jobstore.enqueue(redis, server.settings)
    doc = jobstore.result_with_facts(server.settings, job.id, server.url)
    doc["voice_changes"] = [{"time_s": 12.4, "similarity": 0.41}]
    jobstore.finish(job, doc)
    page = open_page(server.url, f"/r/{job.id}")
    page.get_by_role("heading", name="Likely manipulated").wait_for()
    provenance = page.inner_text("#provenance .facts")
    assert "Signed by C2PA Test Signing Cert (gen.example) on " in provenance
    assert "the signature checks out and the file was not changed since" in provenance
    assert "The signer is not one this service is set to trust" in provenance
    assert "The file says it was made by an AI tool (VideoGen 2.1)." in provenance
    assert (
        "Its recorded history: created with VideoGen 2.1, then converted to another format with ffmpeg."
        in provenance
    )
    assert "Made from prompt.png (an input to the tool)." in provenance
    # The raw fields stay one click away.
    raw = page.locator("#provenance details.raw")
    assert raw.locator("pre").is_hidden()
    raw.locator("summary").click()
    assert (
        json.loads(raw.locator("pre").inner_text())["claim_generator"]
        == "VideoGen/2.1 c2pa-rs/0.36"
    )
    assert page.inner_text("#metadata .facts") == (
        "The program that wrote the container: FFmpeg's libavformat muxed this file (“Lavf61.7.100”)."
    )
    match = page.inner_text("#matches .match")
    assert match.startswith(
        "This video matches a known fake in the bank (senator speech swap, distance 12 of 256)"
    )
    assert "80% of this video matched, covering 60% of the known fake" in match
    assert "The bank's note: debunked 2026-11-02" in match
    # The face tracks: all listed, the one the pictures show marked.
    assert page.locator("#tracks li.track").count() == 3
    assert page.locator("#tracks li.track-shown").get_attribute("data-track") == "1"
    assert "Face 2 seen in 6 frames, from 0.0 s to 5.0 s: 91%" in page.inner_text("#tracks")
    assert "shown in the pictures below" in page.inner_text("[data-track='1']")
    assert "shown in the pictures" not in page.inner_text("[data-track='0']")
    # Each pictured track's thumbnail loads beside its row (left of its words, level with
    # them); the track past the bound says it has none.
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('#tracks img')).every(i => i.complete)"
    )
    for track, when in (("0", "2.0 s"), ("1", "5.0 s")):
        row = page.locator(f"[data-track='{track}']")
        thumb = row.locator("img.track-thumb-img")
        assert thumb.get_attribute("alt") == (
            f"Face {int(track) + 1}, its most suspicious picture at {when}"
        )
        assert thumb.get_attribute("src").count(f"track_0{track}_f") == 1
        assert thumb.evaluate("i => i.naturalWidth") == 256
        pic, words = thumb.bounding_box(), row.locator(".track-text").bounding_box()
        assert pic and words and pic["width"] >= 80 and pic["height"] >= 80
        assert pic["x"] + pic["width"] <= words["x"]
        assert pic["y"] < words["y"] + words["height"] and words["y"] < pic["y"] + pic["height"]
        assert row.locator("figcaption").inner_text() == when
    assert page.locator("[data-track='2'] img").count() == 0
    assert "No picture kept of this face." in page.inner_text("[data-track='2']")
    # The sound: its spectrogram loads, the windows above the threshold are named.
    spectro = page.locator("#audio-evidence img.spectrogram")
    page.wait_for_function("() => document.querySelector('#audio-evidence img').complete")
    assert spectro.evaluate("i => i.naturalWidth") > 0
    assert page.inner_text("#audio-evidence .audio-windows") == (
        "The voice scored above the threshold at 3 s (80%), 5 s (70%)."
    )
    assert page.inner_text("#audio-evidence .voice-changes").startswith(
        "The voice changes at 12.4 s: the speech after sounds like another person."
    )
    shot(page, "result-facts-1280")
    page.set_viewport_size({"width": PHONE, "height": 900})
    assert fits_width(page) == (PHONE, PHONE)
    shot(page, "result-facts-375")
    pic = page.locator("[data-track='1'] img").bounding_box()
    words = page.locator("[data-track='1'] .track-text").bounding_box()
    assert pic and words and pic["x"] + pic["width"] <= words["x"] <= PHONE / 2  # still beside
    page.set_viewport_size({"width": DESKTOP, "height": 900})
    assert page.evaluate(UNLABELLED_CONTROLS) == []

    # The other states of Content Credentials and of the bank, in words.
    words = page.evaluate(
        """() => [
        dfd.provenanceWords({present: true, state: "trusted", signer: {issuer: "Cam Co"}}),
        dfd.provenanceWords({present: true, state: "invalid", tampered: true, signer: {issuer: "Cam Co"}}),
        dfd.provenanceWords({present: true, state: "invalid", codes: [{code: "claimSignature.mismatch"}]}),
        dfd.provenanceWords({present: false, supported: true}),
        dfd.provenanceWords({present: false, supported: false}),
        dfd.provenanceWords({present: true, error: "manifest: truncated box"}),
        dfd.matchWords({label: "cloned ad", distance: 3, matched_share: 1, entry_share: 0.5}, true)
        ]"""
    )
    assert words[0][0] == (
        "Signed by Cam Co; the signature checks out, the signer is one this service trusts, "
        "and the file was not changed since."
    )
    assert "changed after signing" in words[1][0]
    assert (
        words[2][0]
        == "Signed by an unnamed signer, but the credentials fail validation: claimSignature.mismatch."
    )
    assert "says nothing about whether it is genuine" in words[3][0]
    assert "cannot carry Content Credentials" in words[4][0]
    assert words[5] == [
        "The file carries Content Credentials, but they could not be read: manifest: truncated box."
    ]
    assert words[6].startswith(
        "This recording matches a known fake in the bank (cloned ad, distance 3 of 32)"
    )

    # A result with no match and no manifest says so in words too; no face or sound, no sections.
    plain = jobstore.enqueue(redis, server.settings)
    doc = jobstore.result_with_evidence(server.settings, plain.id, server.url)
    doc["matches"] = []
    doc["provenance"] = {"present": False}
    jobstore.finish(plain, doc)
    page.goto(f"{server.url}/r/{plain.id}")
    page.get_by_role("heading", name="Likely manipulated").wait_for()
    assert "matches nothing in this service's bank" in page.inner_text("#matches")
    assert "carries no Content Credentials" in page.inner_text("#provenance")
    assert page.locator("#tracks, #audio-evidence, #metadata").count() == 0


def test_progress_comes_by_server_sent_events_and_reconnects(server, redis, open_page) -> None:
    job = jobstore.enqueue(redis, server.settings)
    page = open_page(server.url, f"/r/{job.id}")
    requests: list = []
    page.on("request", lambda r: requests.append(r))
    page.get_by_text("Waiting for a free worker").wait_for()
    assert page.evaluate("() => document.body.dataset.transport") == "events"
    jobstore.start(job, "decode", 0.25)
    page.locator("#progress-text", has_text="Reading frames and sound").wait_for()
    # The gateway ends each stream after 2 s; EventSource comes back with Last-Event-ID
    # and gets only what changed since (Playwright does not show that header, so the
    # stream's own events say it): one reconnect without a change repeats nothing.
    log = page.evaluate(
        """(id) => new Promise(done => {
        const log = [], es = new EventSource('/api/job/' + id + '/events');
        es.onopen = () => log.push('open');
        es.onerror = () => log.push('end');
        es.addEventListener('progress', e => log.push('progress ' + e.lastEventId));
        setTimeout(() => { es.close(); done(log); }, 3500);
        })""",
        job.id,
    )
    assert log[:4] == ["open", "progress " + str(jobstore.seq(job)), "end", "open"], log
    assert log.count("progress " + str(jobstore.seq(job))) == 1, log
    # Streams that end and come back are not failures: still no polling.
    page.wait_for_timeout(5000)
    assert page.evaluate("() => document.body.dataset.transport") == "events"
    jobstore.start(job, "infer", 0.5)
    page.locator("#progress-text", has_text="Running the detectors").wait_for()
    jobstore.finish(job, jobstore.result_with_evidence(server.settings, job.id, server.url))
    page.get_by_role("heading", name="Likely manipulated").wait_for()
    polls = [r.url for r in requests if r.url.endswith(f"/api/job/{job.id}")]
    assert polls == []  # everything came by the stream
    assert page.evaluate("() => document.body.dataset.transport") == "events"


def test_progress_falls_back_to_polling_without_events(server, redis, open_page, page_log) -> None:
    page_log.allow("status of 503")
    job = jobstore.enqueue(redis, server.settings)
    page = open_page(server.url, "/")
    page.route("**/events", lambda route: route.fulfill(status=503, body="no streams here"))
    page.goto(f"{server.url}/r/{job.id}")
    page.get_by_text("Waiting for a free worker").wait_for()
    page.wait_for_function("() => document.body.dataset.transport === 'polling'")
    jobstore.start(job, "faces", 0.5)
    page.locator("#progress-text", has_text="Finding faces").wait_for()
    jobstore.finish(job, jobstore.result_with_evidence(server.settings, job.id, server.url))
    page.get_by_role("heading", name="Likely manipulated").wait_for()

    # A job cancelled while it waits ends the page as cancelled (it does not poll forever).
    waiting = jobstore.enqueue(redis, server.settings)
    page.goto(f"{server.url}/r/{waiting.id}")
    page.get_by_text("Waiting for a free worker").wait_for()
    assert httpx.delete(f"{server.url}/api/job/{waiting.id}").status_code == 200
    page.get_by_role("heading", name="Cancelled").wait_for()
    assert page.inner_text(".error-box") == "job: cancelled by the client while it waited"


def test_console_manages_the_bank_of_known_fakes(server, redis, open_page, page_log) -> None:
    page_log.allow("status of 404")  # the unknown job, refused as it must be
    job = completed_job(server, redis)
    hashes = MediaHashes(
        frames=[FrameHash(time_s=float(i), pdq=f"{i:02x}" * 32, quality=90) for i in range(3)]
    )
    redis.set(job_hashes_key(job.id), hashes.model_dump_json())
    page = open_page(server.url, "/console")
    page.get_by_label("Admin key (DFD_ADMIN_KEYS)").fill(ADMIN)
    page.keyboard.press("Enter")
    page.locator("#panels").wait_for()
    assert page.inner_text("#bank-caption") == "The bank is empty."
    assert page.evaluate(UNLABELLED_CONTROLS) == []

    page.get_by_label("Job id (a finished analysis)").fill("x" * 22)
    page.get_by_label("Label (what the fake is)").fill("nothing")
    page.get_by_role("button", name="Add to the bank").click()
    page.wait_for_function(
        "() => document.querySelector('#bank-message').textContent.startsWith('Not added')"
    )
    assert "expected the hashes of a finished job" in page.inner_text("#bank-message")

    page.get_by_label("Job id (a finished analysis)").fill(job.id)
    page.get_by_label("Label (what the fake is)").fill("senator speech swap")
    page.get_by_label("Note (optional)").fill("debunked")
    page.get_by_role("button", name="Add to the bank").click()
    page.locator("#bank tr[data-entry]").wait_for()
    assert page.inner_text("#bank-message") == "Added “senator speech swap” (3 hashes)."
    row = page.locator("#bank tr[data-entry]")
    assert row.locator("th").inner_text() == "senator speech swap"
    assert "debunked" in row.inner_text() and "3 frames" in row.inner_text()
    assert redis.hlen(BANK_KEY) == 1
    shot(page, "console-bank-1280")

    # Removing asks first; dismissed, nothing happens; accepted, the entry goes.
    page.once("dialog", lambda d: d.dismiss())
    page.get_by_role("button", name="Remove known fake senator speech swap").click()
    assert redis.hlen(BANK_KEY) == 1
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Remove known fake senator speech swap").click()
    page.wait_for_function("() => !document.querySelector('#bank tr[data-entry]')")
    assert redis.hlen(BANK_KEY) == 0
    assert page.inner_text("#bank-caption") == "The bank is empty."


def test_sbi_heatmaps_are_shown_under_the_frames(server, redis, open_page) -> None:
    job = jobstore.enqueue(redis, server.settings)
    result = jobstore.result_with_evidence(server.settings, job.id, server.url)
    result["evidence"]["sbi_heatmaps"] = [
        jobstore._put(
            server.settings,
            job.id,
            "heatmap_sbi_00_f125.jpg",
            jobstore._picture(3, True),
            server.url,
        )
    ]
    jobstore.finish(job, result)
    page = open_page(server.url, f"/r/{job.id}")
    page.get_by_role("heading", name="Where SBI looked").wait_for()
    page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
    loaded = dict(images_loaded(page))
    assert loaded["SBI heatmap of frame 125"] > 0, loaded
    assert "SBI, frame 125" in page.inner_text("#result")
