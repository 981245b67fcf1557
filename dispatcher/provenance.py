"""C2PA Content Credentials of an input file, read and validated offline.

``read_provenance(path, settings)`` returns a :class:`dfd.schemas.Provenance`: whether
the file carries a manifest store, its validation state (``trusted`` when signed under
one of the configured trust anchors, ``valid`` when intact but signed by someone not
trusted here, ``invalid`` otherwise, with the failure codes), the signer, the claim
generator, the actions, whether an action declares generation by AI (IPTC
``digitalSourceType`` trainedAlgorithmicMedia or compositeWithTrainedAlgorithmicMedia)
and the ingredients.

Nothing is fetched: remote manifests and OCSP responses are not downloaded (a manifest
stored only remotely is reported as present but unread). Trust anchors come from the
``c2pa_trust_anchors`` setting (a PEM bundle); there are none by default.

An absent manifest is no evidence of authenticity: most cameras and editors write
none, and any re-encode or upload to a platform strips it.
"""

from __future__ import annotations

import json
import logging
from functools import cache
from pathlib import Path
from typing import Any

from dfd.errors import ConfigurationError
from dfd.schemas import Ingredient, Provenance, ProvenanceAction, Signer, ValidationCode
from dfd.settings import Settings

log = logging.getLogger(__name__)

# IPTC digital source types that declare generation by a trained model.
AI_SOURCE_TYPES = frozenset({"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"})

_STATES = {"Trusted": "trusted", "Valid": "valid", "Invalid": "invalid"}


def media_type(head: bytes) -> str | None:
    """The MIME type c2pa reads a file as, from its first bytes; ``None``: it cannot carry one.

    By magic bytes rather than the file's name: uploads are stored under names of the
    gateway's choosing, and a URL's path says little.
    """
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"qt  ":
            return "video/quicktime"
        if brand in (b"M4A ", b"M4B ", b"M4P "):
            return "audio/mp4"
        if brand in (b"heic", b"heix", b"mif1", b"msf1"):
            return "image/heic"
        if brand in (b"avif", b"avis"):
            return "image/avif"
        return "video/mp4"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "video/quicktime"
    if head.startswith(b"RIFF"):
        return {b"WAVE": "audio/wav", b"AVI ": "video/avi", b"WEBP": "image/webp"}.get(head[8:12])
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    return None


@cache
def _trust_anchors(path: Path) -> str:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            f"c2pa_trust_anchors: expected a readable PEM bundle at {path}, got {exc}"
        ) from exc
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigurationError(
            f"c2pa_trust_anchors: expected PEM certificates in {path}, got none"
        )
    return text


def c2pa_settings(settings: Settings) -> dict[str, Any]:
    """The c2pa SDK settings: offline, trusting only the configured anchors."""
    out: dict[str, Any] = {
        "verify": {
            "remote_manifest_fetch": False,
            "ocsp_fetch": False,
            "verify_trust": True,
        },
    }
    if settings.c2pa_trust_anchors is not None:
        out["trust"] = {"trust_anchors": _trust_anchors(settings.c2pa_trust_anchors)}
    return out


def read_provenance(path: Path, settings: Settings) -> Provenance:
    """Read and validate the C2PA manifest store of ``path``.

    A damaged or unreadable manifest is reported (``present``, ``invalid``, ``error``),
    never raised: provenance is one more fact about the file, and the detectors still run.

    Raises:
        ConfigurationError: the trust anchor bundle is unreadable.
    """
    import c2pa

    with path.open("rb") as f:
        mime = media_type(f.read(16))
    if mime is None:
        return Provenance(present=False, supported=False)
    context = c2pa.Context(c2pa.Settings.from_dict(c2pa_settings(settings)))
    try:
        with path.open("rb") as stream:
            reader = c2pa.Reader.try_create(mime, stream, context=context)
            if reader is None:
                return Provenance(present=False)
            with reader:
                store = json.loads(reader.json())
                state = reader.get_validation_state()
    except c2pa.C2paError.NotSupported:
        return Provenance(present=False, supported=False)
    except c2pa.C2paError as exc:
        if isinstance(exc, c2pa.C2paError.RemoteManifest) or str(exc).startswith("Remote"):
            # The file points to a manifest at a URL, which offline reading does not fetch.
            return Provenance(
                present=True,
                error=f"the manifest is remote; not fetched (provenance is read offline): {exc}",
            )
        # A manifest store is there (else try_create answers None) but cannot be read.
        return Provenance(present=True, state="invalid", error=f"{type(exc).__name__}: {exc}")
    return from_store(store, state)


def from_store(store: dict[str, Any], state: str | None) -> Provenance:
    """A :class:`Provenance` from the SDK's manifest store JSON and validation state."""
    label = store.get("active_manifest")
    manifest = (store.get("manifests") or {}).get(label) if label else None
    codes = [
        ValidationCode(code=str(s.get("code")), explanation=s.get("explanation"))
        for s in store.get("validation_status") or []
    ]
    if manifest is None:
        return Provenance(
            present=True, state="invalid", codes=codes, error="no active manifest in the store"
        )
    actions = [
        ProvenanceAction(
            action=str(a.get("action")),
            software_agent=_agent(a.get("softwareAgent")),
            digital_source_type=a.get("digitalSourceType"),
        )
        for assertion in manifest.get("assertions") or []
        if str(assertion.get("label", "")).startswith("c2pa.actions")
        for a in (assertion.get("data") or {}).get("actions") or []
    ]
    sig = manifest.get("signature_info") or {}
    # Hash mismatches: the content (or the manifest) changed after it was signed.
    tampered = any("mismatch" in c.code for c in codes)
    return Provenance(
        present=True,
        state=_STATES.get(state or "", "invalid"),  # type: ignore[arg-type]
        codes=codes,
        tampered=tampered,
        signer=Signer(
            issuer=sig.get("issuer"), common_name=sig.get("common_name"), time=sig.get("time")
        )
        if sig
        else None,
        claim_generator=_generator(manifest),
        title=manifest.get("title"),
        actions=actions,
        ai_generated=any(
            (a.digital_source_type or "").rsplit("/", 1)[-1] in AI_SOURCE_TYPES for a in actions
        ),
        ingredients=[
            Ingredient(
                title=i.get("title"), format=i.get("format"), relationship=i.get("relationship")
            )
            for i in manifest.get("ingredients") or []
        ],
    )


def _agent(agent: Any) -> str | None:
    # softwareAgent is a string in c2pa.actions and a generator-info object in actions v2.
    if isinstance(agent, dict):
        return " ".join(str(agent[k]) for k in ("name", "version") if agent.get(k)) or None
    return str(agent) if agent else None


def _generator(manifest: dict[str, Any]) -> str | None:
    """The claim generator: ``claim_generator`` (claims v1) or its first info entry (v2)."""
    if manifest.get("claim_generator"):
        return str(manifest["claim_generator"])
    infos = manifest.get("claim_generator_info") or []
    return _agent(infos[0]) if infos else None
