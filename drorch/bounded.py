"""Input read and parsed within limits: a playbook or a snapshot is text from outside, possibly hostile.

A file is read only when it is a regular file (a FIFO or a device would block or never end), up to a
size limit, and must be UTF-8. YAML is first read as a stream of events, so that its nesting is
bounded before the C composer, which recurses, sees it; the composed graph is then measured as if
every alias were expanded, so an alias bomb is refused before anything walks it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from drorch.errors import InputError, PlaybookError

MAX_BYTES = 8 << 20  # a playbook of 10,000 workloads is about 2 MiB
MAX_SNAPSHOT_BYTES = 128 << 20  # `drorch inventory --json` of 10,000 workloads is about 3 MiB
MAX_DEPTH = 64  # mappings and sequences inside each other
# LibYAML's own nesting limit (in the parser PyYAML 6.0.4's wheels bundle): its scanner looks up to 1,024
# characters ahead for a key, so "[[[[..." meets it before the parse events reach MAX_DEPTH.
LIBYAML_DEPTH = "exceeded maximum nesting depth"
MAX_NODES = 500_000  # scalars, mappings and sequences, every alias expanded (10,000 workloads: ~200,000)

# libyaml's parser when PyYAML was built with it: several times faster, with the same positions.
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a device"),
          (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))


def read_text(path: Path, limit: int = MAX_BYTES) -> str:
    """The UTF-8 text of a regular file of at most `limit` bytes; InputError (exit 2) otherwise, at once."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = next((name for test, name in _KINDS if test(mode)), "not a file")
        raise InputError([f"{path}: not a regular file ({kind})"])
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise InputError([f"{path}:1:1: larger than the limit of {limit >> 20} MiB"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None


def _where(source: str, mark: Any) -> str:
    return f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source


def _check_depth(text: str, source: str) -> None:
    depth = 0
    for event in yaml.parse(text, Loader=Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise InputError([f"{_where(source, event.start_mark)}: nested deeper than {MAX_DEPTH} levels"])
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _check_size(root: yaml.Node, source: str) -> None:
    """Counts nodes and levels as the graph would be walked, each alias as a full copy, without walking it
    so: each node is measured once (anchors come before their aliases, so the recursion stays shallow)."""
    measured: dict[int, tuple[int, int]] = {}  # id -> (nodes, levels)
    open_: set[int] = set()

    def measure(node: yaml.Node) -> tuple[int, int]:
        key = id(node)
        if key in measured:
            return measured[key]
        if key in open_:
            raise InputError([f"{_where(source, node.start_mark)}: an alias refers to a node that contains it"])
        open_.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        below = [measure(child) for child in children]
        nodes, levels = 1 + sum(n for n, _ in below), 1 + max((lv for _, lv in below), default=0)
        open_.discard(key)
        if nodes > MAX_NODES:
            raise InputError([f"{_where(source, node.start_mark)}: expands to more than {MAX_NODES:,} "
                                 "values (aliases included)"])
        if levels > MAX_DEPTH + 1:
            raise InputError([f"{_where(source, node.start_mark)}: nested deeper than {MAX_DEPTH} levels "
                                 "(aliases included)"])
        measured[key] = nodes, levels
        return nodes, levels

    measure(root)


def compose(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The document's node graph and its Python value, each limit checked first: InputError past a limit,
    PlaybookError on bad YAML, both with `file:line:col`."""
    try:
        _check_depth(text, source)
        loader = Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None, None
            _check_size(node, source)
            return node, loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        where = _where(source, exc.problem_mark or exc.context_mark)
        if exc.problem == LIBYAML_DEPTH:
            raise InputError([f"{where}: nested deeper than {MAX_DEPTH} levels"]) from None
        raise PlaybookError([f"{where}: {exc.problem or exc.context}"]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow, placed by its offset
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        raise PlaybookError([f"{source}:{line}:{column}: {exc.reason} (character {exc.character!r})"]) from None
    except yaml.YAMLError as exc:
        raise PlaybookError([f"{source}: {str(exc).splitlines()[0]}"]) from None
    except RecursionError:
        raise InputError([f"{source}: nested deeper than {MAX_DEPTH} levels"]) from None
