"""The package's shape: a few modules at the top and the rest in wings, none too big, none named like another
and none that nothing imports; no import circle among them, counting imports deferred into functions; no two
classes of one name. And the tests', where no test module imports from another or from a conftest (what they
share lives in tests/support and integration/support)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import drorch

PACKAGE = Path(drorch.__file__).parent
REPO = PACKAGE.parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """drorch's modules that the file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return {m for m in found if m in modules}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each module that can reach itself, with the path it takes."""
    out = []
    for start in sorted(graph):
        todo, seen = [(start, [start])], set()
        while todo:
            node, path = todo.pop()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    out.append([*path, start])
                    todo = []
                    break
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append((nxt, [*path, nxt]))
    return out


def test_no_module_imports_itself_through_others() -> None:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: imports(p, set(files)) - {m} for m, p in files.items()}
    # A package imports its own modules by design (drorch.drivers builds its drivers); only cycles between
    # modules count.
    graph = {m: {n for n in deps if not m.startswith(f"{n}.") and not n.startswith(f"{m}.")}
             for m, deps in graph.items()}
    assert circles(graph) == []


def test_the_circle_finder_finds_one() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})[0] == ["a", "b", "c", "a"]


TOP_MODULES = 8  # besides __init__ and __main__
MAX_LINES = 400


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_the_top_holds_a_few_modules_and_the_rest_lives_in_wings() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(top) <= TOP_MODULES, top


def test_no_module_is_too_big() -> None:
    big = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert big == {}


def test_no_two_modules_or_packages_share_a_name() -> None:
    names: dict[str, list[str]] = {}
    for m in modules():
        if m != "drorch":
            names.setdefault(m.rsplit(".", 1)[-1].lstrip("_"), []).append(m)
    assert {n: ms for n, ms in names.items() if len(ms) > 1} == {}


def test_no_two_classes_share_a_name() -> None:
    found: dict[str, list[str]] = {}
    for m, p in modules().items():
        for node in ast.parse(p.read_text()).body:
            if isinstance(node, ast.ClassDef):
                found.setdefault(node.name, []).append(m)
    assert {c: ms for c, ms in found.items() if len(ms) > 1} == {}


def test_every_module_is_imported_by_another_module_or_a_test() -> None:
    files = modules()
    users = [*files.values(), *(p for folder in ("tests", "integration") for p in (REPO / folder).rglob("*.py"))]
    imported = {m for p in users for m in imports(p, set(files)) if p != files.get(m)}
    # a module imported as `from package import module` counts; so does every package a module of it is imported from
    imported |= {m.rsplit(".", n)[0] for m in imported for n in range(1, m.count(".") + 1)}
    assert sorted(set(files) - imported - {"drorch"}) == []


def test_no_test_module_imports_from_another_or_from_a_conftest() -> None:
    tests = {p.relative_to(REPO).with_suffix("").as_posix().replace("/", ".")
             for folder in ("tests", "integration") for p in (REPO / folder).rglob("*.py")
             if p.name.startswith("test_") or p.name == "conftest.py"}
    found = {f"{p.relative_to(REPO)} imports {m}" for folder in ("tests", "integration")
             for p in (REPO / folder).rglob("*.py") for m in imports(p, tests)}
    assert sorted(found) == []


def test_every_type_ignore_names_its_code_and_says_why() -> None:
    bare = [f"{p.relative_to(REPO)}:{n}" for p in PACKAGE.rglob("*.py")
            for n, line in enumerate(p.read_text().splitlines(), 1)
            if "type: ignore" in line and not re.search(r"type: ignore\[[\w,\- ]+\]  # \S", line)]
    assert bare == []
