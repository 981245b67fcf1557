import pytest

from dfd.detectors import DETECTORS
from dfd.errors import ConfigurationError
from dfd.specs import SPECS, spec
from dfd.states import MODALITY_ORDER

pytestmark = pytest.mark.unit


def test_unknown_checkpoint_names_the_known_ones():
    # A configuration error (a clear one-line message from the CLI), not a KeyError traceback.
    with pytest.raises(ConfigurationError, match="no checkpoint named 'nope'; known: .*meso4_df"):
        spec("nope")


def test_every_modality_has_a_checkpoint_and_a_detector():
    roles = {s.modality for s in SPECS.values() if s.modality}
    assert roles == set(MODALITY_ORDER)
    assert {d.modality for d in DETECTORS.values() if d.scorer} == {m.value for m in MODALITY_ORDER}
