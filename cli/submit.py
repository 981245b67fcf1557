"""``dfd submit FILE|URL --api URL``: send a video to a running dfd service and wait for
the verdict, with a progress bar (the SDK, :mod:`dfd.client`, does the work)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from dfd.client import ApiError, Client
from dfd.errors import InputError
from dfd.schemas import JobView

_BAR_WIDTH = 28


class Bar:
    """The job's progress on a stream: a redrawn bar on a terminal, one line per change otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._last: tuple[Any, ...] | None = None

    def __call__(self, view: JobView) -> None:
        state = (view.status, view.stage, view.progress)
        if state == self._last:
            return
        self._last = state
        fraction = view.progress or 0.0
        filled = int(round(fraction * _BAR_WIDTH))
        bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
        label = view.stage.value if view.stage else view.status.value
        line = f"{label:<9} [{bar}] {fraction * 100:5.1f}%"
        self.stream.write(f"\r{line}" if self.tty else f"{line}\n")
        self.stream.flush()

    def end(self) -> None:
        if self.tty and self._last is not None:
            self.stream.write("\n")


def _handle(args: argparse.Namespace) -> int:
    target = args.target
    api_key = args.api_key or os.environ.get("DFD_API_KEY")
    bar = Bar(sys.stderr)
    with Client(args.api, api_key) as client:
        try:
            if "://" in target:
                job = client.submit_url(
                    target, callback_url=args.callback_url, priority=args.priority
                )
            else:
                if not Path(target).is_file():
                    raise InputError(f"submit: expected a video file or a URL, got {target!r}")
                job = client.submit_file(
                    target, callback_url=args.callback_url, priority=args.priority
                )
            print(f"dfd submit: job {job.jobId}", file=sys.stderr)
            view = client.wait(job.jobId, on_progress=bar)
        except ApiError as exc:
            bar.end()
            print(f"dfd: {exc.type}: {exc.detail}", file=sys.stderr)
            return 1
    bar.end()
    print(json.dumps(view.model_dump(mode="json", exclude_none=True), indent=2))
    return 0 if view.status.value == "completed" else 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "submit",
        help="send a video (file or URL) to a running service and wait for the verdict",
        description="Upload FILE or submit URL to the dfd service at --api, follow the job's "
        "progress and print the final job view as JSON (exit 1 unless it completed).",
    )
    parser.add_argument("target", metavar="FILE|URL", help="a video file or a public video URL")
    parser.add_argument("--api", default="http://127.0.0.1:8000", help="the service's base URL")
    parser.add_argument("--api-key", default=None, help="bearer key (default: $DFD_API_KEY)")
    parser.add_argument("--callback-url", default=None, help="also POST the result here when done")
    parser.add_argument("--priority", choices=("high", "default", "low"), default=None)
    parser.set_defaults(handler=_handle)
