"""The settings table covers every field, and each default as written reads back the same."""

from __future__ import annotations

import pytest

from dfd.settings import Settings
from dfd.settings_doc import HEADER, env_name, rows, settings_table

pytestmark = pytest.mark.unit


def test_one_row_per_field_in_declaration_order() -> None:
    variables = [row[0].strip("`") for row in rows()]
    assert variables == [env_name(name) for name in Settings.model_fields]
    assert len(set(variables)) == len(variables)


def test_table_is_markdown_with_header_and_a_line_per_field() -> None:
    table = settings_table()
    lines = table.splitlines()
    assert "\n".join(lines[:2]) == HEADER
    assert len(lines) == 2 + len(Settings.model_fields)
    assert all(line.startswith("| `DFD_") and line.endswith(" |") for line in lines[2:])
    # Every row has exactly four cells (escaped pipes inside a cell do not split it).
    assert all(line.replace("\\|", "").count("|") == 5 for line in lines[2:])


def test_every_field_is_described() -> None:
    undocumented = [row[0] for row in rows() if not row[3].strip()]
    assert undocumented == []


def test_unset_means_a_none_default() -> None:
    for variable, _, default, _ in rows():
        field = variable.strip("`")[len("DFD_") :].lower()
        is_none = Settings.model_fields[field].get_default(call_default_factory=True) is None
        assert (default == "unset") == is_none, variable


WRITTEN = [row for row in rows() if row[2] != "unset"]


@pytest.mark.parametrize("row", WRITTEN, ids=lambda row: row[0].strip("`"))
def test_default_as_written_reads_back_as_the_default(
    row: tuple[str, str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    variable, _, default, _ = row
    text = default.strip("`")
    text = "" if text == '""' else text
    monkeypatch.setenv(variable.strip("`"), text)
    field = variable.strip("`")[len("DFD_") :].lower()

    read_back = getattr(Settings(), field)
    expected = Settings.model_fields[field].get_default(call_default_factory=True)

    def plain(value: object) -> object:
        if isinstance(value, list):
            return [plain(v) for v in value]
        return getattr(value, "get_secret_value", lambda: value)()

    assert plain(read_back) == plain(expected)
