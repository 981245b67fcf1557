"""The detector registry: every entry names what exists."""

from __future__ import annotations

import pytest

from dfd.detectors import DETECTORS, can_clear, fused_detectors
from dfd.settings import Settings
from dfd.specs import SPECS
from dfd.states import MODALITY_ORDER

pytestmark = pytest.mark.unit


def test_every_detector_names_a_checkpoint_the_specs_know():
    settings = Settings()
    for d in DETECTORS.values():
        checkpoint = getattr(settings, d.model_setting, d.model_setting)
        assert checkpoint in SPECS, d.name


def test_the_fused_detectors_are_the_ensembles_modalities_in_order():
    assert [d.modality for d in fused_detectors()] == [m.value for m in MODALITY_ORDER]


def test_only_a_detector_strong_enough_can_clear_media():
    assert can_clear("audio")
    assert not can_clear("visual") and not can_clear("lipsync")
