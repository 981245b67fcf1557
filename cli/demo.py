"""``dfd demo VIDEO``: one video through the full local stack, as ``make demo`` runs it.

Starts the embedded stack (:class:`cli.stack.Stack` with one worker and the gateway on a
free port), submits the video over HTTP like any client (``POST /api/upload`` for a file,
``POST /api/analyze`` for a URL), prints a line each time the job moves, then the result
JSON and where the evidence is, and stops what it started. The children's logs go to a
file under ``data_dir/logs`` so the terminal shows only the demo.

Stdlib and httpx only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import httpx

from cli.stack import Shutdown, Stack, describe, signals_raise_shutdown
from dfd.errors import DfdError, InputError, UpstreamUnavailableError
from dfd.settings import load_settings

_URL = re.compile(r"^https?://", re.IGNORECASE)
TERMINAL = ("completed", "failed")


def is_url(source: str) -> bool:
    return bool(_URL.match(source))


class JobClient:
    """The three calls of the HTTP API a client needs, over one ``httpx.Client``."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def submit(self, source: str) -> str:
        """Upload a file or ask for a URL to be analysed; the job id.

        Raises:
            InputError: when the file is missing or the gateway rejects the request.
        """
        if is_url(source):
            response = self.client.post("/api/analyze", json={"url": source})
        else:
            path = Path(source)
            if not path.is_file():
                raise InputError(f"demo: expected a video file or an http(s) URL, got {source!r}")
            with path.open("rb") as fh:
                response = self.client.post(
                    "/api/upload", files={"file": (path.name, fh, "application/octet-stream")}
                )
        if response.status_code != 202:
            raise InputError(f"demo: expected 202 from the gateway, got {_problem(response)}")
        return str(response.json()["jobId"])

    def view(self, job_id: str, max_wait_s: float = 3600.0) -> dict[str, Any]:
        """The job's view; a rate-limited poll waits as ``Retry-After`` says (at most
        ``max_wait_s`` in all) and asks again."""
        deadline = time.monotonic() + max_wait_s
        while True:
            response = self.client.get(f"/api/job/{job_id}")
            if response.status_code != 429:
                break
            delay = _retry_after_s(response)
            if time.monotonic() + delay > deadline:
                break
            time.sleep(delay)
        if response.status_code != 200:
            raise UpstreamUnavailableError(
                f"demo: expected job {job_id} to be known to the gateway, got {_problem(response)}"
            )
        return dict(response.json())

    def wait(
        self,
        job_id: str,
        *,
        timeout_s: float,
        poll_s: float = 0.5,
        on_change: Callable[[dict[str, Any]], None] = lambda view: None,
    ) -> dict[str, Any]:
        """Poll until the job is ``completed`` or ``failed``; its last view.

        ``on_change`` sees each view whose status, attempt, stage or progress (to 5 %)
        differs from the previous one.
        """
        deadline = time.monotonic() + timeout_s
        last: tuple[Any, ...] | None = None
        while True:
            view = self.view(job_id, max_wait_s=max(deadline - time.monotonic(), 0.0))
            progress = view.get("progress")
            key = (
                view.get("status"),
                view.get("attempt"),
                view.get("stage"),
                None if progress is None else round(float(progress) * 20),
            )
            if key != last:
                on_change(view)
                last = key
            if view.get("status") in TERMINAL:
                return view
            if time.monotonic() > deadline:
                raise UpstreamUnavailableError(
                    f"demo: expected job {job_id} to finish within {timeout_s:.0f} s, "
                    f"got status {view.get('status')} at stage {view.get('stage')}"
                )
            time.sleep(poll_s)


def _retry_after_s(response: httpx.Response) -> float:
    try:
        return max(float(response.headers.get("retry-after", "1")), 0.0)
    except ValueError:
        return 1.0


def _problem(response: httpx.Response) -> str:
    """``STATUS title: detail`` from a problem+json answer, else the status and body start."""
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code} {response.text[:200]!r}"
    if isinstance(body, dict) and ("title" in body or "detail" in body):
        return f"{response.status_code} {body.get('title', '')}: {body.get('detail', '')}".rstrip(
            ": "
        )
    return f"{response.status_code} {json.dumps(body)[:200]}"


def progress_line(view: dict[str, Any], elapsed_s: float) -> str:
    """``[  3.1 s] active  decode   40%  (attempt 2)``"""
    parts = [f"[{elapsed_s:6.1f} s]", f"{view.get('status', '?'):<9}"]
    if view.get("stage"):
        parts.append(f"{view['stage']:<8}")
    if view.get("progress") is not None:
        parts.append(f"{float(view['progress']) * 100:4.0f}%")
    if int(view.get("attempt") or 1) > 1:
        parts.append(f"(attempt {view['attempt']})")
    return " ".join(parts).rstrip()


def evidence_lines(result: dict[str, Any], evidence_dir: Path | None, job_id: str) -> list[str]:
    """Where the evidence is: the local folder (when the store is local) and every URL."""
    lines: list[str] = []
    if evidence_dir is not None:
        files = sorted(p for p in evidence_dir.rglob("*") if p.is_file() and job_id in str(p))
        folder = _common_parent(files) if files else evidence_dir
        lines.append(f"evidence folder: {folder} ({len(files)} files)")
    evidence = result.get("evidence") or {}
    urls = [*evidence.get("thumbnails", []), *evidence.get("heatmaps", [])]
    if evidence.get("timeline_chart"):
        urls.append(evidence["timeline_chart"])
    if urls:
        lines.append("evidence URLs:")
        lines.extend(f"  {url}" for url in urls)
    return lines


def _common_parent(files: list[Path]) -> Path:
    parts = [p.parent.parts for p in files]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return Path(*common)


def run_demo(
    source: str, *, keep: bool = False, timeout_s: float | None = None, out: IO[str] = sys.stdout
) -> int:
    """Analyse ``source`` through a fresh local stack; 0 when the job completed, 1 otherwise."""

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    if not is_url(source) and not Path(source).is_file():
        raise InputError(f"demo: expected a video file or an http(s) URL, got {source!r}")
    settings = load_settings()
    log_dir = settings.data_dir.resolve() / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"demo-{time.strftime('%Y%m%d-%H%M%S')}.log"
    limit_s = timeout_s or settings.job_timeout_s * (settings.job_retries + 1) + 60.0
    headers = {}
    if settings.api_keys:
        headers["Authorization"] = f"Bearer {settings.api_keys[0].get_secret_value()}"

    with log_path.open("ab") as log_file:
        stack = Stack(
            settings, port=0, workers=1, child_output=log_file, log=lambda s: say(f"dfd demo: {s}")
        )
        try:
            with signals_raise_shutdown():
                endpoints = stack.start()
                say("dfd demo: stack ready (logs in " + str(log_path) + ")")
                say("\n".join(describe(endpoints, 1)))
                with httpx.Client(
                    base_url=endpoints.gateway, headers=headers, timeout=60.0
                ) as http:
                    client = JobClient(http)
                    started = time.monotonic()
                    job_id = client.submit(source)
                    say(
                        f"dfd demo: job {job_id} submitted ({'url' if is_url(source) else 'upload'})"
                    )
                    view = client.wait(
                        job_id,
                        timeout_s=limit_s,
                        on_change=lambda v: say(progress_line(v, time.monotonic() - started)),
                    )
                status = _report(view, endpoints.evidence_dir, job_id, say)
                if keep and status == 0:
                    say(f"dfd demo: open {endpoints.gateway}/r/{job_id} to see the result")
                    say(
                        "dfd demo: the stack keeps running so the evidence URLs work; Ctrl-C stops it"
                    )
                    stack.supervise()
                return status
        except Shutdown as exc:
            say(f"dfd demo: {exc} received; stopping")
            return 130
        except DfdError:
            say(f"dfd demo: the services' logs are in {log_path}")
            raise
        finally:
            stack.stop()
            say("dfd demo: stopped everything it started")


def _report(
    view: dict[str, Any], evidence_dir: Path | None, job_id: str, say: Callable[[str], None]
) -> int:
    if view.get("status") != "completed" or not view.get("result"):
        error = view.get("error") or {}
        say(
            f"dfd demo: job {job_id} failed: {error.get('type', '?')}: {error.get('message', 'no message')}"
        )
        return 1
    result = view["result"]
    say(json.dumps(result, indent=2))
    say(f"verdict: {result.get('label')} (confidence {float(result.get('confidence', 0.0)):.3f})")
    for line in evidence_lines(result, evidence_dir, job_id):
        say(line)
    return 0


def _handle(args: argparse.Namespace) -> int:
    return run_demo(args.video, keep=args.keep, timeout_s=args.timeout_s)


def register(subparsers: Any) -> None:
    d = subparsers.add_parser(
        "demo",
        help="analyze one video through the full local stack",
        description="Start the embedded stack, submit VIDEO (a file path or an http(s) URL), "
        "print progress, the result JSON and where the evidence is, then stop.",
    )
    d.add_argument("video", help="path of a video file, or an http(s) URL")
    d.add_argument(
        "--keep",
        action="store_true",
        help="keep the stack running after the result (evidence URLs stay live)",
    )
    d.add_argument(
        "--timeout-s", type=float, default=None, help="give up waiting for the job after this long"
    )
    d.set_defaults(handler=_handle)
