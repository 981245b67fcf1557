"""Every job id the gateway makes is accepted by every place that names things after it.

A regression: ids from ``secrets.token_urlsafe`` could start with ``-`` or ``_``, which
the worker's temp-folder check refused, failing about one job in 16 as "internal".
"""

from __future__ import annotations

import pytest

from dfd import signing
from dfd.jobid import is_job_id, new_job_id
from dfd.settings import Settings
from dispatcher.cleanup import job_workspace
from dispatcher.store import new_key

pytestmark = pytest.mark.unit


def test_new_ids_are_unique_unguessable_and_valid_everywhere(tmp_path):
    settings = Settings(data_dir=tmp_path)
    ids = {new_job_id() for _ in range(2000)}
    assert len(ids) == 2000
    for job_id in ids:
        assert is_job_id(job_id) and len(job_id) == 32
        assert signing.is_valid_key(new_key(job_id, "thumb.jpg", "image/jpeg"))
    with job_workspace(settings, next(iter(ids))) as folder:
        assert folder.is_dir()


@pytest.mark.parametrize("bad", ["", "-rf", "_x", ".hidden", "a/b", "a..b", "x" * 129, "a b"])
def test_unsafe_ids_are_refused(bad):
    assert not is_job_id(bad)
