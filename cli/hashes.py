"""``dfd hashes import|export``: the bank of known fakes as a ThreatExchange hash list.

``export`` writes every entry (a ``vpdq <signal>`` line each, its metadata on a
``# dfd-entry`` comment line before it; ``--plain`` leaves those out); ``import`` reads
such a list, or one from elsewhere (each ``vpdq`` line an entry, all ``pdq`` lines one
entry under ``--label``), and adds the entries to the bank. Both use ``DFD_REDIS_URL``.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dfd.errors import ConfigurationError, InputError
from dfd.known_fakes import BANK_KEY, HashListError, KnownFake, export_lines, import_lines
from dfd.settings import Settings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "hashes",
        help="import or export the bank of known fakes (PDQ hash lists)",
        description="Move the bank of known fakes in and out of Redis as a hash list.",
    )
    sub = parser.add_subparsers(dest="hashes_command", metavar="ACTION", required=True)
    out = sub.add_parser("export", help="write the bank as a hash list")
    out.add_argument("file", nargs="?", default="-", help="output file (default: stdout)")
    out.add_argument("--plain", action="store_true", help="signals only, no dfd-entry lines")
    out.set_defaults(handler=_export)
    into = sub.add_parser("import", help="add the entries of a hash list to the bank")
    into.add_argument("file", help="hash list ('-': stdin)")
    into.add_argument(
        "--label", default=None, help="label of a plain list's entry (default: the file name)"
    )
    into.set_defaults(handler=_import)


def _redis(settings: Settings) -> Any:
    from redis import Redis

    if not settings.redis_url:
        raise ConfigurationError("hashes: expected DFD_REDIS_URL (the queue's Redis), got none")
    return Redis.from_url(settings.redis_url, socket_timeout=settings.redis_timeout_s)


def _export(args: argparse.Namespace) -> int:
    redis = _redis(Settings())
    entries = [KnownFake.model_validate_json(v) for v in redis.hgetall(BANK_KEY).values()]
    entries.sort(key=lambda e: e.created_at)
    text = "".join(line + "\n" for line in export_lines(entries, plain=args.plain))
    if args.file == "-":
        sys.stdout.write(text)
    else:
        Path(args.file).write_text(text)
    print(f"exported {len(entries)} entries", file=sys.stderr)
    return 0


def _import(args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        lines = text.splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"hashes: expected a readable text hash list, got {exc}") from exc
    label = args.label or (Path(args.file).name if args.file != "-" else "imported")
    try:
        entries = import_lines(lines, label, datetime.now(UTC).isoformat(timespec="seconds"))
    except HashListError as exc:
        raise InputError(str(exc)) from exc
    redis = _redis(Settings())
    if entries:
        redis.hset(BANK_KEY, mapping={e.id: e.model_dump_json() for e in entries})
    print(f"imported {len(entries)} entries", file=sys.stderr)
    return 0
