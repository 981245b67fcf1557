import pytest

from dfd.ensemble import ENSEMBLE_INPUTS
from dfd.errors import ConfigurationError
from dfd.specs import SPECS, spec
from dfd.states import MODALITY_ORDER

pytestmark = pytest.mark.unit


def test_unknown_checkpoint_names_the_known_ones():
    # A configuration error (a clear one-line message from the CLI), not a KeyError traceback.
    with pytest.raises(ConfigurationError, match="no checkpoint named 'nope'; known: .*meso4_df"):
        spec("nope")


def test_every_modality_has_a_default_checkpoint_and_fusion_matches_order():
    roles = {s.modality for s in SPECS.values() if s.modality}
    assert roles == set(MODALITY_ORDER)
    fusion = spec("fusion")
    assert [t.name for t in fusion.inputs[:3]] == [f"{m.value}_scores" for m in MODALITY_ORDER]
    assert {t.name for t in ENSEMBLE_INPUTS} >= {"mask", "weights"}
