"""The playbook reference in docs/ is what `drorch schema --markdown` prints: regenerate it with
`.venv/bin/drorch schema --markdown > docs/playbook.md` when the model changes."""

from __future__ import annotations

import pytest

from drorch.model.schema_doc import reference
from tests.support.cli import REPO, drorch

DOC = REPO / "docs" / "playbook.md"


def test_docs_playbook_md_is_what_drorch_schema_markdown_prints(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = drorch(capsys, "schema", "--markdown")
    assert code == 0
    assert DOC.read_text() == out, "docs/playbook.md is stale: .venv/bin/drorch schema --markdown > docs/playbook.md"


def test_every_object_is_a_table_of_its_keys_and_every_enumeration_its_values() -> None:
    schema = {
        "title": "Playbook", "type": "object", "required": ["name"],
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$"},
            "limit": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 1000000}, {"type": "null"}],
                      "default": None, "description": "at most | this many"},
            "mode": {"$ref": "#/$defs/Mode", "default": "fast"},
            "steps": {"type": "array", "items": {"$ref": "#/$defs/Step"}},
        },
        "$defs": {"Mode": {"enum": ["fast", "slow"], "type": "string"},
                  "Step": {"type": "object", "description": "One step.", "properties": {"on": {"type": "boolean",
                                                                                         "default": False}}}},
    }
    text = reference(schema)
    assert text.index("## Playbook") < text.index("## Mode") < text.index("## Step")
    assert "| `name` | string (a name) | required |  |" in text
    assert "| `limit` | integer 1 to 1,000,000 |  | at most \\| this many |" in text
    assert "| `mode` | [Mode](#mode) | `fast` |  |" in text
    assert "| `steps` | list of [Step](#step) |  | One step. |" in text
    assert "One of: `fast`, `slow`." in text and "| `on` | boolean | `false` |  |" in text
