"""The playbook reference in Markdown, written from the playbook's JSON Schema (no I/O): `drorch schema --markdown`
prints it, and docs/playbook.md is what it printed, which a test keeps current."""

from __future__ import annotations

import json
from typing import Any

Schema = dict[str, Any]

NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]*$"
HEADER = ("# Playbook reference\n\n"
          "Written by `drorch schema --markdown` from the playbook's JSON Schema (`drorch schema`); a test fails when "
          "this file\nis not what that command prints. A name is a letter or digit, then letters, digits, `_`, "
          "`.` or `-`.\nUnknown keys are errors; numbers are finite.\n")


def reference(schema: Schema) -> str:
    """Each object of the schema as a table of its keys, the playbook first and then in the order they are met;
    each enumeration as its values."""
    defs: dict[str, Schema] = schema.get("$defs", {})
    order = ["Playbook", *_met(schema, defs)]
    parts = [HEADER]
    for name in order:
        node = schema if name == "Playbook" else defs[name]
        parts.append(_section(name, node, defs))
    return "\n".join(parts)


def _met(schema: Schema, defs: dict[str, Schema]) -> list[str]:
    """The definitions the schema refers to, breadth first from the top."""
    seen: list[str] = []
    todo = [schema]
    while todo:
        node = todo.pop(0)
        for ref in _refs(node):
            if ref not in seen:
                seen.append(ref)
                todo.append(defs[ref])
    return seen


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"].rsplit("/", 1)[-1]] if "$ref" in node else []
        return own + [r for k, v in node.items() if k != "$defs" for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _section(name: str, node: Schema, defs: dict[str, Schema]) -> str:
    title = f"## {name}\n"
    about = f"\n{node['description']}\n" if node.get("description") else ""
    if "enum" in node:
        return f"{title}{about}\nOne of: {', '.join(f'`{v}`' for v in node['enum'])}.\n"
    required = set(node.get("required", []))
    rows = ["| key | type | default | what |", "| --- | --- | --- | --- |"]
    for key, prop in node.get("properties", {}).items():
        default = "required" if key in required else _default(prop)
        what = prop.get("description") or _described(prop, defs)
        rows.append(f"| `{key}` | {_type(prop)} | {default} | {_cell(what)} |")
    return f"{title}{about}\n" + "\n".join(rows) + "\n"


def _default(prop: Schema) -> str:
    if "default" not in prop or prop["default"] is None:
        return ""
    value = prop["default"]
    shown = json.dumps(value) if isinstance(value, dict | bool) else str(value)
    return f"`{shown}`" if shown not in ("[]", "{}") else "empty"


def _described(prop: Schema, defs: dict[str, Schema]) -> str:
    """A key without a description of its own is described by the object it holds."""
    refs = _refs(prop)
    return str(defs[refs[0]].get("description", "")).split("\n")[0] if len(refs) == 1 else ""


def _type(prop: Schema) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in prop:
        kinds = [_type(p) for p in prop["anyOf"] if p.get("type") != "null"]
        return " or ".join(kinds) or "null"
    if "const" in prop:
        return f"`{prop['const']}`"
    if "enum" in prop:
        return "one of " + ", ".join(f"`{v}`" for v in prop["enum"])
    kind = str(prop.get("type", "any"))
    if kind == "array":
        return f"list of {_type(prop.get('items', {}))}"
    if kind == "object":
        values = next(iter(prop.get("patternProperties", {}).values()), prop.get("additionalProperties"))
        return f"map of name to {_type(values)}" if isinstance(values, dict) else "map"
    return kind + _bounds(prop)


def _bounds(prop: Schema) -> str:
    if prop.get("pattern") == NAME_PATTERN:
        return " (a name)"
    low = prop.get("minimum", prop.get("exclusiveMinimum"))
    high = prop.get("maximum", prop.get("exclusiveMaximum"))
    if low is not None and high is not None:
        return f" {_number(low)} to {_number(high)}"
    if low is not None:
        return f" from {_number(low)}"
    if high is not None:
        return f" up to {_number(high)}"
    if prop.get("minLength"):
        return " (not empty)"
    return ""


def _number(n: float) -> str:
    return f"{n:,}" if isinstance(n, int) else f"{n:g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
