"""A bad ``DFD_*`` value is one line naming the variable, what was expected and what came."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dfd.errors import ConfigurationError
from dfd.settings import load_settings
from tests.fixtures.redis import ROOT

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "DFD_JOB_TIMEOUT_S",
            "abc",
            "settings: DFD_JOB_TIMEOUT_S: expected a valid integer, unable to parse string as "
            "an integer, got 'abc'",
        ),
        (
            "DFD_JOB_TIMEOUT_S",
            "-1",
            "settings: DFD_JOB_TIMEOUT_S: expected greater than 0, got '-1'",
        ),
        (
            "DFD_API_KEYS",
            "not json",
            "settings: DFD_API_KEYS: expected JSON, got a value that does not parse",
        ),
        (
            "DFD_WEBHOOK_TIMEOUT_S",
            "soon",
            "settings: DFD_WEBHOOK_TIMEOUT_S: expected a valid number, unable to parse string "
            "as a number, got 'soon'",
        ),
    ],
)
def test_bad_setting_is_one_clear_line(monkeypatch, name, value, expected) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert str(caught.value) == expected


def test_secrets_are_not_echoed(monkeypatch) -> None:
    monkeypatch.setenv(
        "DFD_TENANTS", '{"acme": {"keys": ["s3cr3t-but-short"], "admin": "perhaps"}}'
    )
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("settings: DFD_TENANTS[acme][admin]: expected a valid boolean")
    assert "s3cr3t" not in message and "perhaps" not in message


def test_the_command_prints_one_line_not_a_traceback() -> None:
    env = {"DFD_JOB_TIMEOUT_S": "abc", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "worker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "dfd: configuration: settings: DFD_JOB_TIMEOUT_S: expected a valid integer, unable to "
        "parse string as an integer, got 'abc'"
    ]


def test_a_short_webhook_secret_is_refused_and_an_empty_one_is_unset(monkeypatch) -> None:
    monkeypatch.setenv("DFD_WEBHOOK_SECRET", "short")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert str(caught.value) == (
        "settings: DFD_WEBHOOK_SECRET: expected at least 16 characters, got fewer"
    )
    monkeypatch.setenv("DFD_WEBHOOK_SECRET", "")
    assert load_settings().webhook_secret is None
