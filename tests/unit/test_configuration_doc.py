"""docs/configuration.md carries the current settings table (regenerate: scripts/update-docs)."""

from pathlib import Path

from waorch.core.settings import markdown_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_settings_table_in_docs_is_current():
    text = DOC.read_text()
    assert markdown_table() in text, "docs/configuration.md is stale: run scripts/update-docs"
