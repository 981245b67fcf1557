"""What the status endpoint pays to decode a finished job's result, two ways.

``gateway.queue.view_json`` splices the result document into the job view as the worker
wrote it (base64-decoded, never parsed); rq's own ``Result.restore`` parses it, so the view
must serialise it again. Re-signing the evidence links at read (``gateway.evidence_links``)
needs the parse too, but not rq's decoding. Measured on a result the size of a 30 s video's (30 timeline
points, 4 thumbnails and heatmaps)::

    .venv/bin/python -m benchmarks.bench_job_view   # writes benchmarks/results/job_view.md
"""

from __future__ import annotations

import base64
import json
import platform
import timeit
from pathlib import Path

from rq.results import Result as RQResult

from dfd import signing
from dfd.settings import Settings
from gateway.evidence_links import resigner
from gateway.queue import SERIALIZER, view_json

RESULTS = Path(__file__).resolve().parent / "results"


SECRET = b"k" * 32
JOB = "0123456789abcdef0123456789abcdef"


def _url(name: str) -> str:
    return signing.signed_url("http://h", f"{JOB}/{'a' * 32}-{name}", 1, SECRET)


def result_document() -> dict:
    return {
        "confidence": 0.7,
        "label": "manipulated",
        "modalities": {
            m: {"score": 0.5, "weight": 0.3, "used": True} for m in ("visual", "audio", "lipsync")
        },
        "evidence": {
            "thumbnails": [_url(f"thumb_{i:02d}.jpg") for i in range(4)],
            "heatmaps": [_url(f"heat_{i:02d}.png") for i in range(4)],
            "timeline": [
                {"frame": i * 25, "time_s": float(i), "score": 0.5, "visual": 0.4, "audio": 0.9}
                for i in range(30)
            ],
            "timeline_chart": _url("timeline.png"),
            "expires_in_s": 3600,
        },
        "models": {"visual": "meso4_df@1", "audio": "aasist@1"},
        "timings_ms": {"decode": 1000.0, "faces": 700.0, "inference": 1100.0},
        "media": {"container": "mp4", "width": 1920, "height": 1080, "duration_s": 30.0},
    }


def main() -> int:
    raw = SERIALIZER.dumps(result_document())
    entry = {b"return_value": base64.b64encode(raw), b"type": b"1"}
    fields = [b"finished", b"{}", b"2026-01-01T00:00:00Z", None, None, None, None]

    def splice() -> bytes | None:
        return view_json("job", fields, [("1700000000000-0", entry)])

    resign = resigner(Settings(public_base_url="http://h"), SECRET)

    def splice_resigned() -> bytes | None:
        return view_json("job", fields, [("1700000000000-0", entry)], resign=resign)

    def via_rq() -> str:
        restored = RQResult.restore("job", "1700000000000-0", entry, None, serializer=SERIALIZER)
        return json.dumps(restored.return_value, separators=(",", ":"))

    n = 20000
    us = {name: min(timeit.repeat(f, number=n, repeat=3)) / n * 1e6 for name, f in
          (("splice (view_json)", splice),
           ("splice, evidence links re-signed (view_json + gateway.evidence_links)", splice_resigned),
           ("rq Result.restore + json.dumps", via_rq))}  # fmt: skip
    lines = [
        "# Job view: decoding a finished job's result",
        "",
        f"`python -m benchmarks.bench_job_view` on {platform.processor() or platform.machine()}, "
        f"result document of {len(raw)} bytes, best of 3 x {n} calls.",
        "",
        "| way | µs per status read |",
        "|---|---|",
        *(f"| {name} | {v:.1f} |" for name, v in us.items()),
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "job_view.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
