"""Signed test media made with c2pa-python's Builder and the c2pa project's test certificate.

The certificate chain and key (``media_dir/c2pa/es256_certs.pem``, ``es256_private.key``)
are the c2pa project's public test credentials: untrusted by design, so a clip signed
with them reads back ``valid`` unless a test names the chain's intermediate CA as a
trust anchor.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"


def to_mp4(source: Path, out: Path, *args: str) -> Path:
    """``source`` re-encoded to H.264/AAC MP4 with extra ffmpeg ``args`` (filters, trims)."""
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-i", str(source), *args,
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    return out


def sign(
    source: Path,
    out: Path,
    c2pa_dir: Path,
    generator: tuple[str, str],
    source_type: str,
    parent: Path | None = None,
) -> Path:
    """``source`` signed with a ``c2pa.created`` (or, with ``parent``, ``c2pa.edited``) action."""
    import c2pa

    info = c2pa.C2paSignerInfo(
        alg=b"es256",
        sign_cert=(c2pa_dir / "es256_certs.pem").read_bytes(),
        private_key=(c2pa_dir / "es256_private.key").read_bytes(),
        ta_url=None,
    )
    declared = {"digitalSourceType": IPTC + source_type}
    if parent is None:
        actions = [{"action": "c2pa.created", **declared}]
    else:  # an edit opens its parent first
        opened = {"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}}
        actions = [opened, {"action": "c2pa.edited", **declared}]
    manifest = {
        "claim_generator_info": [{"name": generator[0], "version": generator[1]}],
        "title": out.name,
        "assertions": [{"label": "c2pa.actions", "data": {"actions": actions}}],
    }
    with c2pa.Signer.from_info(info) as signer, c2pa.Builder(manifest) as builder:
        if parent is not None:
            with parent.open("rb") as f:
                builder.add_ingredient(
                    {"title": parent.name, "relationship": "parentOf", "label": "parent"},
                    "video/mp4",
                    f,
                )
        builder.sign_file(str(source), str(out), signer)
    return out


def tamper(signed: Path, out: Path) -> Path:
    """``signed`` with bytes of its media data changed after signing (a pixel edit)."""
    data = bytearray(signed.read_bytes())
    at = data.index(b"mdat") + 4096
    data[at : at + 16] = bytes(b ^ 0xFF for b in data[at : at + 16])
    out.write_bytes(bytes(data))
    return out


def intermediate_ca(c2pa_dir: Path, out: Path) -> Path:
    """The test chain's intermediate CA alone, as a PEM bundle to trust."""
    end = "-----END CERTIFICATE-----"
    certs = [
        c.strip() + "\n" + end + "\n"
        for c in (c2pa_dir / "es256_certs.pem").read_text().split(end)
        if c.strip()
    ]
    out.write_text(certs[1])
    return out
