"""Evidence links signed when a job is read, so they live as long as the result.

The worker signs its links once, at the end of the job; a result kept 24 h would hold
dead links after ``evidence_url_ttl_s``. Each read of a finished job (``GET
/api/job/{id}``, its events' ``done``) re-signs the local store's links, valid
``evidence_url_ttl_s`` from that moment, from the keys in the stored URLs. The links are
rewritten in the stored bytes (only ``exp`` and ``sig`` change), so the result is still
spliced unparsed: ``benchmarks/results/job_view.md`` measures both. S3's presigned links are left as the worker
signed them (presigning needs the S3 client, which the gateway does not import).
"""

from __future__ import annotations

from collections.abc import Callable

from dfd.settings import Settings
from dfd.signing import resign_links


def resigner(settings: Settings, secret: bytes) -> Callable[[bytes], bytes]:
    """A function re-signing the evidence links of one stored result document."""
    ttl_s = settings.evidence_url_ttl_s

    def resign(raw: bytes) -> bytes:
        return resign_links(raw, secret, ttl_s)

    return resign
