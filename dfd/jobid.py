"""Job ids: how they are made and what counts as one, in one place.

A job id names the RQ job, the job's temp folder, its evidence prefix and the first
part of every local evidence key, so every one of those must accept every id the gateway
makes: a letter or digit first (never ``-``, ``_`` or ``.``, which folder names, option
parsers and path checks treat specially), then letters, digits, ``-`` and ``_``.
"""

from __future__ import annotations

import re
import secrets

# The pattern, without anchors, for composing into other patterns (evidence keys).
JOB_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}"
_JOB_ID = re.compile(JOB_ID_PATTERN)


def new_job_id() -> str:
    """An unguessable job id (128 random bits, hex): knowing one tells nothing about another."""
    return secrets.token_hex(16)


def is_job_id(value: str) -> bool:
    return isinstance(value, str) and _JOB_ID.fullmatch(value) is not None


def cancel_key(job_id: str) -> str:
    """The Redis key whose presence asks a job to stop: set by ``DELETE /api/job/{id}``,
    read by the worker at each stage boundary."""
    return f"dfd:cancel:{job_id}"


def batch_key(batch_id: str) -> str:
    """The Redis key of a batch's record (``POST /api/batch``): its tenant and job ids."""
    return f"dfd:batch:{batch_id}"
