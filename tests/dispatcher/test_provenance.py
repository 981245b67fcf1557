"""C2PA provenance read offline: real signed files (the c2pa project's and ones signed here)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from dfd.errors import ConfigurationError
from dfd.settings import Settings
from dispatcher.provenance import media_type, read_provenance
from tests.dispatcher.c2pa_media import IPTC, intermediate_ca, sign, tamper, to_mp4

pytestmark = pytest.mark.unit

GRID = "bbaf2n.mpg"


@pytest.fixture(scope="module")
def clips(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A GRID clip as MP4, signed as an AI generator and as a camera would, and edited after."""
    out = tmp_path_factory.mktemp("c2pa")
    c2pa_dir = media_dir / "c2pa"
    plain = to_mp4(media_dir / "grid" / GRID, out / "plain.mp4")
    ai = sign(plain, out / "ai.mp4", c2pa_dir, ("Sora", "2.0"), "trainedAlgorithmicMedia")
    camera = sign(plain, out / "camera.mp4", c2pa_dir, ("Pixel Camera", "9.1"), "digitalCapture")
    edited = to_mp4(camera, out / "edited-raw.mp4", "-vf", "hflip")
    composite = sign(
        edited,
        out / "composite.mp4",
        c2pa_dir,
        ("Firefly", "3"),
        "compositeWithTrainedAlgorithmicMedia",
        parent=camera,
    )
    return {
        "plain": plain,
        "ai": ai,
        "camera": camera,
        "tampered": tamper(ai, out / "tampered.mp4"),
        "reencoded": to_mp4(ai, out / "reencoded.mp4", "-b:v", "200k"),
        "composite": composite,
        "anchors": intermediate_ca(c2pa_dir, out / "anchors.pem"),
    }


def test_an_ai_generated_clip_is_valid_but_untrusted_by_default(clips) -> None:
    p = read_provenance(clips["ai"], Settings())
    assert p.present and p.supported
    assert p.state == "valid"
    assert [c.code for c in p.codes] == ["signingCredential.untrusted"]
    assert not p.tampered
    assert p.ai_generated
    assert p.claim_generator == "Sora 2.0"
    assert p.signer is not None and p.signer.issuer == "C2PA Test Signing Cert"
    assert p.signer.common_name == "C2PA Signer"
    assert [(a.action, a.digital_source_type) for a in p.actions] == [
        ("c2pa.created", "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia")
    ]


def test_a_trust_anchor_makes_the_same_clip_trusted(clips) -> None:
    p = read_provenance(clips["ai"], Settings(c2pa_trust_anchors=clips["anchors"]))
    assert p.state == "trusted"
    assert p.codes == []
    assert p.ai_generated


def test_a_camera_clip_declares_no_ai(clips) -> None:
    p = read_provenance(clips["camera"], Settings())
    assert p.state == "valid" and not p.ai_generated
    assert p.actions[0].digital_source_type.endswith("/digitalCapture")
    assert p.claim_generator == "Pixel Camera 9.1"


def test_a_composite_declares_ai_and_names_its_ingredient(clips) -> None:
    p = read_provenance(clips["composite"], Settings())
    assert p.state == "valid" and p.ai_generated
    assert [(i.title, i.relationship) for i in p.ingredients] == [("camera.mp4", "parentOf")]
    assert [a.action for a in p.actions] == ["c2pa.opened", "c2pa.edited"]


def test_an_edit_after_signing_is_tampered_provenance(clips) -> None:
    p = read_provenance(clips["tampered"], Settings())
    assert p.present and p.state == "invalid" and p.tampered
    assert "assertion.bmffHash.mismatch" in {c.code for c in p.codes}
    # What the manifest claims is still reported; the verdict must not rely on it.
    assert p.ai_generated


def test_a_reencode_strips_the_manifest(clips) -> None:
    p = read_provenance(clips["reencoded"], Settings())
    assert not p.present and p.supported and p.state is None
    assert read_provenance(clips["plain"], Settings()).present is False


@pytest.mark.parametrize(
    ("name", "generator", "ai", "ingredients"),
    [
        ("C.jpg", "make_test_images/0.26.0 c2pa-rs/0.26.0", False, 0),
        ("video1.mp4", "TestApp c2patool/0.6.2 c2pa-rs/0.28.2", False, 1),
        ("legacy.mp4", "TestApp c2patool/0.3.8 c2pa-rs/0.16.1", False, 1),
        ("sample1_signed.wav", "c2pa-c test 0.2", False, 0),
    ],
)
def test_the_c2pa_projects_signed_fixtures(media_dir, name, generator, ai, ingredients) -> None:
    p = read_provenance(media_dir / "c2pa" / name, Settings())
    assert p.present and p.state == "valid"
    assert p.claim_generator == generator
    assert p.ai_generated is ai
    assert len(p.ingredients) == ingredients
    assert p.actions and p.signer is not None


@pytest.mark.parametrize("name", ["C-recorded-as-mov.mov", "earth_apollo17.jpg"])
def test_unsigned_fixtures_have_no_manifest(media_dir, name) -> None:
    p = read_provenance(media_dir / "c2pa" / name, Settings())
    assert not p.present and p.supported


def test_a_format_that_cannot_carry_credentials(media_dir) -> None:
    p = read_provenance(media_dir / "grid" / GRID, Settings())  # MPEG program stream
    assert not p.present and not p.supported


def test_media_types_by_magic_bytes(media_dir, clips) -> None:
    head = lambda p: Path(p).read_bytes()[:16]  # noqa: E731
    assert media_type(head(clips["ai"])) == "video/mp4"
    assert media_type(head(media_dir / "c2pa" / "C-recorded-as-mov.mov")) == "video/quicktime"
    assert media_type(head(media_dir / "c2pa" / "sample1_signed.wav")) == "audio/wav"
    assert media_type(head(media_dir / "c2pa" / "C.jpg")) == "image/jpeg"
    assert media_type(head(media_dir / "still" / "astronaut.png")) == "image/png"
    assert media_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert media_type(head(media_dir / "grid" / GRID)) is None


def test_a_bad_trust_anchor_bundle_is_a_configuration_error(clips, tmp_path) -> None:
    not_pem = tmp_path / "anchors.pem"
    not_pem.write_text("hello")
    with pytest.raises(ConfigurationError, match="expected PEM certificates"):
        read_provenance(clips["ai"], Settings(c2pa_trust_anchors=not_pem))
    with pytest.raises(ConfigurationError, match="readable PEM bundle"):
        read_provenance(clips["ai"], Settings(c2pa_trust_anchors=tmp_path / "missing.pem"))


def test_a_remote_manifest_is_not_fetched(clips, media_dir, tmp_path) -> None:
    """A clip whose manifest lives only at a URL: reported present, nothing fetched."""
    import c2pa

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        c2pa_dir = media_dir / "c2pa"
        info = c2pa.C2paSignerInfo(
            alg=b"es256",
            sign_cert=(c2pa_dir / "es256_certs.pem").read_bytes(),
            private_key=(c2pa_dir / "es256_private.key").read_bytes(),
            ta_url=None,
        )
        manifest = {
            "claim_generator_info": [{"name": "Remote", "version": "1"}],
            "assertions": [
                {
                    "label": "c2pa.actions",
                    "data": {
                        "actions": [
                            {"action": "c2pa.created", "digitalSourceType": IPTC + "digitalCapture"}
                        ]
                    },
                }
            ],
        }
        out = tmp_path / "remote.mp4"
        with c2pa.Signer.from_info(info) as signer, c2pa.Builder(manifest) as builder:
            builder.set_no_embed()
            builder.set_remote_url(f"http://127.0.0.1:{port}/manifest.c2pa")
            builder.sign_file(str(clips["plain"]), str(out), signer)
        p = read_provenance(out, Settings())
        with pytest.raises(TimeoutError):
            listener.accept()  # nobody connected
    assert p.present and p.state is None
    assert p.error is not None and "not fetched" in p.error
