"""``dfd models rollout``: canary and shadow rollouts of one role's model version.

    dfd models rollout start visual --version 2 --shadow        score every job with both
    dfd models rollout start visual --version 2 --canary 0.1    fuse v2's score for 10 %
    dfd models rollout status                                   the versions side by side
    dfd models rollout promote visual                           pin visual to v2
    dfd models rollout rollback visual                          keep the current version

The plan and the scores live in Redis (:mod:`dispatcher.rollout`); ``start`` first asks
Triton (``--url`` or ``DFD_TRITON_URL``) that both versions are loaded and ready side by
side.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    """``rollout`` under ``dfd models``."""
    rollout = sub.add_parser(
        "rollout",
        help="Canary or shadow rollout of a new model version: start, status, promote, rollback.",
    )
    actions = rollout.add_subparsers(dest="rollout_command", metavar="ACTION", required=True)

    start = actions.add_parser("start", help="Start a rollout of one role's new version.")
    start.add_argument("role", help="visual, audio or lipsync")
    start.add_argument("--version", type=int, required=True, help="the candidate version")
    how = start.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--canary",
        type=float,
        metavar="SHARE",
        help="share of jobs (0 < SHARE <= 1) whose fused score is the candidate's",
    )
    how.add_argument(
        "--shadow",
        action="store_true",
        help="score every job with both versions; the candidate's is recorded, never fused",
    )
    start.add_argument(
        "--url", default=None, help="Triton's gRPC host:port (default: DFD_TRITON_URL)."
    )
    start.set_defaults(handler=_start)

    status = actions.add_parser("status", help="Rollouts under way, versions side by side.")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=_status)

    for name, promote, text in (
        ("promote", True, "End the rollout: the candidate serves the role from now on."),
        ("rollback", False, "End the rollout: the current version keeps serving the role."),
    ):
        end = actions.add_parser(name, help=text)
        end.add_argument("role")
        end.set_defaults(handler=_finish, promote=promote)


def _redis() -> Any:
    from redis import Redis

    from dfd.errors import ConfigurationError
    from dfd.logs import configure_logging
    from dfd.settings import load_settings

    settings = load_settings()
    configure_logging(settings)
    if not settings.redis_url:
        raise ConfigurationError("models rollout: expected DFD_REDIS_URL, got none")
    return settings, Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)


def current_version(connection: Any, settings: Any, role: str) -> int:
    """The version serving ``role``: a promoted one, else the settings' checkpoint's."""
    from dfd.errors import ConfigurationError
    from dispatcher import rollout
    from export.triton_repo import role_specs

    if role not in rollout.ROLES:
        raise ConfigurationError(
            f"models rollout: expected a role among {', '.join(rollout.ROLES)}, got {role!r}"
        )
    pinned = rollout.serving(connection).get(role)
    return pinned if pinned is not None else role_specs(settings)[role].version


def _start(args: argparse.Namespace) -> int:
    from cli.triton_index import served_versions
    from dfd.errors import ConfigurationError
    from dispatcher import rollout

    settings, connection = _redis()
    with connection:
        current = current_version(connection, settings, args.role)
        url = args.url or settings.triton_url
        if not url:
            raise ConfigurationError(
                "models rollout: expected Triton's address (--url or DFD_TRITON_URL) to check "
                "that both versions are loaded, got none"
            )
        loaded = dict(served_versions(url, "models rollout").get(args.role, []))
        missing = [v for v in (current, args.version) if loaded.get(str(v)) != "READY"]
        if missing:
            seen = ", ".join(f"v{v} {s}" for v, s in sorted(loaded.items())) or "nothing"
            raise ConfigurationError(
                f"models rollout {args.role}: expected Triton at {url} to serve versions "
                f"{current} and {args.version} ready side by side, got {seen} (add the "
                f"version's folder and list both in the model's version_policy)"
            )
        mode = rollout.Mode.SHADOW if args.shadow else rollout.Mode.CANARY
        plan = rollout.start(
            connection,
            args.role,
            current=current,
            candidate=args.version,
            mode=mode,
            share=1.0 if args.shadow else args.canary,
        )
    what = (
        f"every job scored by both, v{plan.candidate} recorded beside"
        if mode is rollout.Mode.SHADOW
        else f"{plan.share:.0%} of jobs fused with v{plan.candidate}"
    )
    print(f"rollout {plan.role}: {mode.value} of v{plan.candidate} beside v{plan.current} ({what})")
    return 0


def _describe(plan: Any, seen: Any) -> list[str]:
    def mean(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [
        f"{plan.role}: {plan.mode.value} of v{plan.candidate} beside v{plan.current}"
        + (f", share {plan.share:.0%}" if plan.mode.value == "canary" else "")
    ]
    for arm, v in (("current", seen.current), ("candidate", seen.candidate)):
        lines.append(
            f"  {arm:<9}  v{v.version}  jobs {v.count:>6}  mean score {mean(v.mean)}  "
            f"flagged {v.flagged}"
        )
    if plan.mode.value == "shadow":
        lines.append(
            f"  both       pairs {seen.pairs}  drift (mean |difference|) {mean(seen.drift)}  "
            f"disagreements {seen.disagreements}"
        )
    return lines


def _status(args: argparse.Namespace) -> int:
    from dispatcher import rollout

    _, connection = _redis()
    with connection:
        plans = rollout.plans(connection)
        compared = {role: rollout.comparison(connection, plan) for role, plan in plans.items()}
        pinned = rollout.serving(connection)
    if args.json:
        print(
            json.dumps(
                {
                    "rollouts": {
                        role: {"plan": json.loads(plan.to_json()), **compared[role].as_dict()}
                        for role, plan in sorted(plans.items())
                    },
                    "promoted": pinned,
                },
                indent=2,
            )
        )
        return 0
    if not plans:
        print("no rollout under way")
    for role, plan in sorted(plans.items()):
        print("\n".join(_describe(plan, compared[role])))
    for role, version in sorted(pinned.items()):
        print(f"{role}: promoted v{version} serves it")
    return 0


def _finish(args: argparse.Namespace) -> int:
    from dispatcher import rollout

    _, connection = _redis()
    with connection:
        entry = rollout.finish(connection, args.role, promote=args.promote)
    plan = entry["plan"]
    kept = plan["candidate"] if args.promote else plan["current"]
    print(f"rollout {args.role}: {entry['decision']}; v{kept} serves it")
    print(json.dumps(entry["comparison"], indent=2))
    return 0
