"""The playbook: which sites exist, which workloads move between them, and how.

Loading keeps the YAML position of every node so that each problem, from YAML syntax to a
reference that points nowhere, is reported as `file:line:col: message`, all of them at once.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from drorch.errors import PlaybookError

Loc = tuple[str | int, ...]


class WorkloadKind(StrEnum):
    VM = "vm"
    CONTAINER = "container"


class Strategy(StrEnum):
    LIVE = "live"  # VM: libvirt live migration
    CHECKPOINT = "checkpoint"  # container: CRIU checkpoint, copy, restore
    REDEPLOY = "redeploy"  # container: recreate from its image with the same config


STRATEGIES: dict[WorkloadKind, tuple[Strategy, ...]] = {
    WorkloadKind.VM: (Strategy.LIVE,),
    WorkloadKind.CONTAINER: (Strategy.CHECKPOINT, Strategy.REDEPLOY),
}

Name = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Site(_Model):
    libvirt: str | None = Field(None, description="libvirt URI of the site's hypervisor")
    docker: str | None = Field(None, description="Docker endpoint, e.g. unix:///run/docker.sock")
    migration_address: str | None = Field(
        None, description="address the site listens on for incoming migration streams"
    )


class Workload(_Model):
    name: Name
    kind: WorkloadKind
    strategy: Strategy | None = Field(None, description="defaults to the first strategy of the kind")

    @property
    def move_strategy(self) -> Strategy:
        return self.strategy or STRATEGIES[self.kind][0]

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"


class Playbook(_Model):
    version: int = 1
    name: Name
    primary: Name
    secondary: Name
    sites: dict[Name, Site]
    workloads: list[Workload] = Field(min_length=1)

    def endpoint_of(self, kind: WorkloadKind, site: str) -> str | None:
        s = self.sites[site]
        return s.libvirt if kind is WorkloadKind.VM else s.docker


def reference_problems(pb: Playbook) -> list[tuple[Loc, str]]:
    """Checks that span several fields: names that point nowhere, strategies that do not fit."""
    problems: list[tuple[Loc, str]] = []
    for role in ("primary", "secondary"):
        site = getattr(pb, role)
        if site not in pb.sites:
            problems.append(((role,), f"site {site!r} is not defined under sites ({', '.join(pb.sites)})"))
    if pb.primary == pb.secondary:
        problems.append((("secondary",), "primary and secondary must be different sites"))
    seen: set[str] = set()
    for i, w in enumerate(pb.workloads):
        if w.key in seen:
            problems.append((("workloads", i, "name"), f"{w.kind} {w.name!r} is listed twice"))
        seen.add(w.key)
        if w.strategy is not None and w.strategy not in STRATEGIES[w.kind]:
            allowed = ", ".join(STRATEGIES[w.kind])
            problems.append(
                (("workloads", i, "strategy"), f"strategy {w.strategy} does not apply to a {w.kind} ({allowed})")
            )
        for role in ("primary", "secondary"):
            site = getattr(pb, role)
            if site in pb.sites and pb.endpoint_of(w.kind, site) is None:
                field = "libvirt" if w.kind is WorkloadKind.VM else "docker"
                problems.append(
                    (("workloads", i), f"{w.kind} {w.name!r} needs a {field} endpoint on site {site!r}")
                )
    return problems


def _positions(node: yaml.Node, loc: Loc = ()) -> dict[Loc, yaml.Mark]:
    """Where each value (and each mapping key, under its own path) starts in the file."""
    marks: dict[Loc, yaml.Mark] = {loc: node.start_mark}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*loc, str(key.value))
            marks.update(_positions(value, child))
            marks[(*child, "__key__")] = key.start_mark
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            marks.update(_positions(item, (*loc, i)))
    return marks


def _where(marks: dict[Loc, yaml.Mark], loc: Loc, source: str, at_key: bool = False) -> str:
    """`file:line:col` of the value at loc (or of its key), else of the nearest enclosing node."""
    if at_key and (mark := marks.get((*loc, "__key__"))) is not None:
        return f"{source}:{mark.line + 1}:{mark.column + 1}"
    for n in range(len(loc), -1, -1):
        mark = marks.get(loc[:n])
        if mark is not None:
            if n < len(loc):  # the path ends below what the file has: point at the nearest key
                mark = marks.get((*loc[:n], str(loc[n]), "__key__"), mark)
            return f"{source}:{mark.line + 1}:{mark.column + 1}"
    return f"{source}:1:1"


def parse_playbook(text: str, source: str = "<playbook>") -> Playbook:
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data: Any = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise PlaybookError([f"{where}: {exc.problem or exc.context}"]) from None
    except yaml.YAMLError as exc:
        raise PlaybookError([f"{source}: {exc}"]) from None
    if not isinstance(data, dict) or node is None:
        raise PlaybookError([f"{source}:1:1: a playbook is a YAML mapping (sites, workloads, ...)"])
    marks = _positions(node)
    try:
        pb = Playbook.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            field = ".".join(str(p) for p in loc) or "playbook"
            where = _where(marks, loc, source, at_key=err["type"] == "extra_forbidden")
            problems.append(f"{where}: {field}: {err['msg']}")
        raise PlaybookError(problems) from None
    refs = reference_problems(pb)
    if refs:
        raise PlaybookError([f"{_where(marks, loc, source)}: {msg}" for loc, msg in refs])
    return pb


def load_playbook(path: Path) -> Playbook:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlaybookError([f"{path}: cannot read the playbook: {exc.strerror or exc}"]) from None
    return parse_playbook(text, str(path))
