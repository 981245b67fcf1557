"""Evidence links signed when a job is read, so they live as long as the result.

The worker signs its links once, at the end of the job; a result kept 24 h would hold
dead links after ``evidence_url_ttl_s``. Each read of a finished job (``GET
/api/job/{id}``, its events' ``done``, a batch's views) re-signs its links, valid
``evidence_url_ttl_s`` from that moment, from the keys in the stored URLs:

- the local store's: only ``exp`` and ``sig`` change (``dfd.signing.resign_links``);
- the S3 store's presigned GETs into ``s3_bucket``, at ``s3_public_url`` or
  ``s3_endpoint``: presigned afresh for the address links use now
  (``dfd.s3_presign``, standard library: the gateway imports no S3 client).

Every link of the document is matched by its shape, not by its field, so each evidence
link field is covered: ``thumbnails``, ``heatmaps``, ``timeline_chart``, ``spectrogram``,
``mouth_sync``, ``sbi_heatmaps`` and each of ``tracks[].thumbnail`` (``tests/gateway/test_evidence_links.py``
walks the schema for them and fails on one left stale).

The links are rewritten in the stored bytes, so the result is still spliced unparsed:
``benchmarks/results/job_view.md`` measures both.
"""

from __future__ import annotations

from collections.abc import Callable

from dfd.s3_presign import s3_link_resigner
from dfd.settings import Settings
from dfd.signing import resign_links


def resigner(settings: Settings, secret: bytes) -> Callable[[bytes], bytes]:
    """A function re-signing the evidence links of one stored result document."""
    ttl_s = settings.evidence_url_ttl_s
    if settings.store == "s3":
        s3 = s3_link_resigner(settings)

        def resign_both(raw: bytes) -> bytes:
            return s3(resign_links(raw, secret, ttl_s))

        return resign_both

    def resign(raw: bytes) -> bytes:
        return resign_links(raw, secret, ttl_s)

    return resign
