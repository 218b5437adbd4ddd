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
from typing import Any, ClassVar

import yaml

from drorch.errors import InputError, PlaybookError
from drorch.file_kinds import not_regular
from drorch.gc_pause import collector_paused

MAX_BYTES = 8 << 20  # a playbook of 10,000 workloads is about 2 MiB
MAX_SNAPSHOT_BYTES = 128 << 20  # `drorch inventory --json` of 10,000 workloads is about 3 MiB
MAX_SECRET_BYTES = 64 << 10  # a token, a certificate or a key (a chain of several certificates included)
MAX_DEPTH = 64  # mappings and sequences inside each other
# LibYAML's own nesting limit (in the parser PyYAML 6.0.4's wheels bundle): its scanner looks up to 1,024
# characters ahead for a key, so "[[[[..." meets it before the parse events reach MAX_DEPTH.
LIBYAML_DEPTH = "exceeded maximum nesting depth"
MAX_NODES = 500_000  # scalars, mappings and sequences, every alias expanded (10,000 workloads: ~200,000)


def _located(construct: Any) -> Any:
    """A scalar constructor whose failure on a value (`!!int xyz`, an integer of more digits than Python reads)
    is a YAML error at the value's place, not a bare ValueError from deep inside the loader."""

    def located(loader: Any, node: yaml.Node) -> Any:
        try:
            return construct(loader, node)
        except (ValueError, OverflowError, TypeError) as exc:
            value = str(node.value)
            shown = value if len(value) <= 40 else f"{value[:20]}...({len(value)} characters)"
            raise yaml.constructor.ConstructorError(
                None, None, f"{shown!r} is not a valid {node.tag.rsplit(':', 1)[-1]}: {str(exc)[:120]}",
                node.start_mark) from None

    return located


_COLLECTIONS = (":map", ":seq", ":omap", ":pairs", ":set")  # built in steps (generators): left as they are


# libyaml's parser when PyYAML was built with it: several times faster, with the same positions.
class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]  # a base chosen at import: libyaml's when present
    """The safe loader whose scalar constructors say where a value they cannot read is."""

    yaml_constructors: ClassVar[dict[str | None, Any]] = {
        tag: fn if tag is None or tag.endswith(_COLLECTIONS) else _located(fn)
        for tag, fn in yaml.SafeLoader.yaml_constructors.items()}


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


def _opened(path: Path) -> int:
    """A descriptor of a regular file, opened without blocking (a FIFO would wait for a writer); InputError else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    kind = not_regular(os.fstat(fd).st_mode)
    if kind is not None:
        os.close(fd)
        raise InputError([f"{path}: not a regular file ({kind})"])
    return fd


def check_file(path: Path, limit: int) -> None:
    """A file that a library will read (a certificate, a key) is a regular file of at most `limit` bytes: checked
    before the library opens it, which would block on a FIFO or read a device without end."""
    fd = _opened(path)
    try:
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if size > limit:
        raise InputError([f"{path}: larger than the limit of {_size(limit)}"])


def read_text(path: Path, limit: int = MAX_BYTES, private: bool = False) -> str:
    """The UTF-8 text of a regular file of at most `limit` bytes (with `private`, one that only its owner may
    read); InputError (exit 2) otherwise, at once, before anything is read."""
    fd = _opened(path)
    mode = os.fstat(fd).st_mode
    if private and mode & (stat.S_IRWXG | stat.S_IRWXO):
        os.close(fd)
        raise InputError([f"{path}: may be read by others (mode {stat.filemode(mode)}): chmod 600 {path}"])
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise InputError([f"{path}:1:1: larger than the limit of {_size(limit)}"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None


def _where(source: str, mark: Any) -> str:
    return f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source


def _check_events(text: str, source: str) -> None:
    """Nesting and the count of values as written, from the parser's events: a document past either limit is
    refused before a node of it is made (composing a million nodes takes seconds and hundreds of MiB)."""
    depth = values = 0
    for event in yaml.parse(text, Loader=Loader):
        if isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, yaml.NodeEvent):  # a scalar, an alias, or the start of a mapping or sequence
            values += 1
            if values > MAX_NODES:
                raise InputError([f"{_where(source, event.start_mark)}: holds more than {MAX_NODES:,} values"])
            depth += isinstance(event, yaml.CollectionStartEvent)
            if depth > MAX_DEPTH:
                raise InputError([f"{_where(source, event.start_mark)}: nested deeper than {MAX_DEPTH} levels"])


def _unique_keys(node: yaml.MappingNode, source: str) -> None:
    """A key given twice is an error at its second place: YAML loaders keep only the last, so a second
    `workloads:` would silently drop the first list."""
    seen: dict[tuple[str, str], Any] = {}
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
            first = seen.setdefault((key.tag, key.value), key.start_mark)
            if first is not key.start_mark:
                raise PlaybookError([f"{_where(source, key.start_mark)}: key {key.value[:60]!r} is given twice "
                                     f"(first at {_where(source, first)}): YAML would keep only the last"])


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
            _unique_keys(node, source)
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


def _compose(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    _check_events(text, source)
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_size(node, source)
        return node, loader.construct_document(node)
    finally:
        loader.dispose()


def compose(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The document's node graph and its Python value, each limit checked first: InputError past a limit,
    PlaybookError on bad YAML, both with `file:line:col`."""
    try:
        with collector_paused:
            return _compose(text, source)
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
