"""docs/ says what the code does: its reference tables are generated from the settings structs and the
entry model's input table (harness.docs), and every setting has a meaning."""

from __future__ import annotations

import msgspec
import pytest

from harness import docs


def test_every_setting_has_a_meaning() -> None:
    assert docs.missing_meanings() == []


def test_a_field_without_a_meaning_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    class Extra(msgspec.Struct):
        known: int = 1
        forgotten: str = ""

    monkeypatch.setattr(docs, "SETTINGS", (("Extra", "EXTRA_", ((Extra, {"known": "k", "gone": "g"}),)),))
    assert docs.missing_meanings() == ["EXTRA_FORGOTTEN has no entry in Extra's help",
                                       "Extra's help describes gone, which is no field"]


@pytest.mark.parametrize("page", [docs.SETTINGS_PAGE, docs.CONTRACT_PAGE], ids=lambda p: p.name)
def test_generated_pages_are_up_to_date(page: object) -> None:
    assert docs.pages()[page] == page.read_text(), "run: python -m harness.docs"  # type: ignore[attr-defined]


def test_tables_show_every_variable_with_its_default_and_alias() -> None:
    tables = docs.settings_tables()
    assert "| `WHISPER_BEAM_SIZE` | `1` |" in tables
    assert "| `FRONTEND_DB_URL` (or `DB_URL`) | empty |" in tables
    assert "| `WHISPER_LOOP_CHECK` | `true` |" in tables
    inputs = docs.inputs_table()
    assert all(f"| `{item.tensor}` |" in inputs for item in docs.contract.INPUTS)
