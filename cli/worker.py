"""``dfd worker``: one RQ worker process on the dfd queues (see :mod:`dispatcher.worker`)."""

from __future__ import annotations

import argparse
from typing import Any

from dfd.settings import load_settings
from dfd.states import QUEUE_NAMES
from dispatcher.worker import main


def _handle(args: argparse.Namespace) -> int:
    settings = load_settings()
    queues = tuple(q.strip() for q in args.queues.split(",") if q.strip())
    return main(settings, burst=args.burst, queues=queues, name=args.name, max_jobs=args.max_jobs)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="run one job worker (start several for more throughput)",
        description="Run one RQ worker on the dfd queues. Settings come from DFD_* variables.",
    )
    parser.add_argument("--burst", action="store_true", help="quit when the queues are empty")
    parser.add_argument(
        "--queues", default=",".join(QUEUE_NAMES), help="comma-separated queues, in priority order"
    )
    parser.add_argument("--name", default=None, help="worker name (default: rq's)")
    parser.add_argument("--max-jobs", type=int, default=None, help="quit after this many jobs")
    parser.set_defaults(handler=_handle)
