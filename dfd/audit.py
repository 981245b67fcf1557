"""The audit log: an append-only Redis stream of who did what, and what each verdict used.

Entries are added with ``XADD`` to ``dfd:audit`` (never edited or deleted by dfd; the
stream is capped at ``MAX_ENTRIES``, oldest first, so it cannot fill Redis): the gateway
adds ``submit``, ``batch`` and ``cancel`` with the tenant, the client address and the job;
the worker adds ``verdict`` with the label, the confidence, the model versions and the
threshold the verdict used. ``GET /api/audit`` (admin tenants) reads it back.
"""

from __future__ import annotations

import json
from typing import Any

from dfd.schemas import timestamp

AUDIT_KEY = "dfd:audit"
MAX_ENTRIES = 1_000_000


def entry(action: str, **fields: Any) -> dict[str, str]:
    """One entry's fields as Redis stores them (text; nested values as JSON)."""
    out = {"at": timestamp(), "action": action}
    for name, value in fields.items():
        if value is None:
            continue
        out[name] = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return out


def append(redis: Any, action: str, **fields: Any) -> Any:
    """Append one entry (sync or async client: returns what its ``xadd`` returns)."""
    return redis.xadd(AUDIT_KEY, entry(action, **fields), maxlen=MAX_ENTRIES, approximate=True)  # type: ignore[arg-type]
