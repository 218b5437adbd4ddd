"""The package's shape: no import circle among drorch's modules, counting imports deferred into functions; and
the tests', where no test module imports from another (what they share lives in helper modules)."""

from __future__ import annotations

import ast
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


def test_no_test_module_imports_from_another() -> None:
    tests = {p.relative_to(REPO).with_suffix("").as_posix().replace("/", ".")
             for folder in ("tests", "integration") for p in (REPO / folder).rglob("test_*.py")}
    found = {f"{p.relative_to(REPO)} imports {m}" for p in (REPO / "tests").rglob("*.py")
             for m in imports(p, tests)} | {f"{p.relative_to(REPO)} imports {m}"
                                            for p in (REPO / "integration").rglob("*.py") for m in imports(p, tests)}
    assert sorted(found) == []
