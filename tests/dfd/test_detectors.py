"""The detector registry: every entry names what exists."""

from __future__ import annotations

import pytest

from dfd.detectors import DETECTORS, can_clear, enabled, fused_detectors, scorers
from dfd.errors import ConfigurationError
from dfd.settings import Settings
from dfd.specs import SPECS
from dfd.states import MODALITY_ORDER

pytestmark = pytest.mark.unit


def test_every_detector_names_a_checkpoint_the_specs_know():
    settings = Settings()
    for d in DETECTORS.values():
        checkpoint = getattr(settings, d.model_setting, d.model_setting)
        assert checkpoint in SPECS, d.name


def test_the_default_scorers_are_one_per_modality_in_order():
    assert [d.modality for d in scorers(Settings())] == [m.value for m in MODALITY_ORDER]
    assert {d.modality for d in fused_detectors()} == {m.value for m in MODALITY_ORDER}


def test_the_enabled_set_follows_dfd_detectors():
    names = [d.name for d in enabled(Settings(detectors="audio, audio_asv5"))]
    assert names == ["audio", "audio_asv5", "speech"]  # the speech gate always runs
    assert "audio_asv5" not in [d.name for d in enabled(Settings())]  # off by default
    with pytest.raises(ConfigurationError, match="no detector named nope"):
        enabled(Settings(detectors="nope"))


def test_the_voice_check_is_evidence_only_and_chosen_like_the_scorers():
    voice = DETECTORS["voice"]
    assert not voice.scorer and not voice.fused and voice.modality is None
    assert voice not in scorers(Settings(detectors="audio,voice"))
    assert [d.name for d in enabled(Settings(detectors="audio,voice"))] == [
        "audio",
        "speech",
        "voice",
    ]
    assert "voice" not in [d.name for d in enabled(Settings(detectors="audio"))]
    assert not can_clear("voice")
    with pytest.raises(ConfigurationError, match="at least one scoring detector"):
        enabled(Settings(detectors="voice"))


def test_only_a_detector_strong_enough_can_clear_media():
    assert can_clear("audio")
    assert not can_clear("visual") and not can_clear("lipsync")


def test_mouth_sync_runs_only_when_named_and_is_never_fused():
    assert "mouth_sync" not in [d.name for d in enabled(Settings())]
    names = [d.name for d in enabled(Settings(detectors="visual, mouth_sync"))]
    assert names == ["visual", "mouth_sync", "speech"]
    mouth = DETECTORS["mouth_sync"]
    assert not mouth.scorer and not mouth.fused and not can_clear("mouth_sync")
    assert "mouth_sync" not in [d.name for d in scorers(Settings(detectors="visual, mouth_sync"))]
