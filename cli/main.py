"""The ``dfd`` command: one subcommand per module of this package, registered in help order."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cli import analyze, demo, exporter, gateway, hashes, models, stack, submit, worker
from dfd import __version__
from dfd.errors import DfdError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dfd", description="Deepfake detection service.")
    parser.add_argument("--version", action="version", version=f"dfd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (analyze, submit, worker, gateway, exporter, stack, demo, models, hashes):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except DfdError as exc:
        print(f"dfd: {exc.type}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if not exc.filename:
            raise
        # A file or folder dfd cannot use: usually a DFD_DATA_DIR that is a file,
        # read-only or on a full disk. One line naming the path, not a traceback.
        print(
            f"dfd: configuration: cannot use {exc.filename}: {exc.strerror or exc}; check "
            "that DFD_DATA_DIR (default .dfd) is a writable folder with free space",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
