"""The order of the container flows when an end fails, over stand-ins for two Podman services or Docker daemons
(the lab runs them for real in integration/, where failures cannot be provoked on cue)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import requests
from docker.errors import APIError

from drorch.drivers.background import Jobs
from drorch.drivers.base import Endpoint, Handle, MoveRequest
from drorch.drivers.containers._podman_checkpoints import PodmanCheckpoints
from drorch.drivers.containers.container_driver import ContainerDriver
from drorch.drivers.containers.docker_engine import HELPER_LABEL, HELPER_OWNER, DockerSite
from drorch.drivers.containers.podman_engine import PodmanSite
from drorch.errors import MoveCancelled, MoveFailed
from drorch.model.playbook import Strategy

ORIGINAL = {"Id": "c0ffee", "Config": {"Image": "docker.io/shop/web:1"}, "HostConfig": {"NetworkMode": "none"}}


class Service:
    """What PodmanCheckpoints asks of a PodmanSite, answered from memory; `fail` names the call that fails."""

    def __init__(self, site: str, fail: str = "") -> None:
        self.ep = Endpoint(site, f"unix:///{site}.sock", engine="podman")
        self.fail = fail
        self.calls: list[str] = []
        self.containers: dict[str, dict[str, Any]] = {}
        self.on_call: Callable[[str], None] = lambda name: None

    def _call(self, name: str) -> None:
        self.calls.append(name)
        self.on_call(name)
        if name == self.fail:
            raise MoveFailed(f"Podman on site {self.ep.site}: {name} refused")

    def has_image(self, image: str) -> bool:
        return True

    @contextlib.contextmanager
    def export(self, container: str) -> Iterator[Iterator[bytes]]:
        self._call("export")
        try:
            yield iter([b"tar"])
        finally:
            self.calls.append("export closed")

    def import_(self, chunks: Iterator[bytes], publish: list[str]) -> str:
        list(chunks)
        self.containers["web"] = {"Id": "half"}
        self._call("import")
        return "new"

    def inspect(self, name: str) -> dict[str, Any] | None:
        return self.containers.get(name)

    @property
    def api(self) -> Service:
        return self

    def remove_container(self, container: str, force: bool) -> None:
        self.calls.append(f"remove {container}")

    def restore_here(self, container: str) -> None:
        self._call("restore here")

    def remove(self, original: dict[str, Any]) -> None:
        self.calls.append("remove source")


def move(src: Service, dst: Service, cancel_at: str = "") -> tuple[str | None, str]:
    """The move, cancelled (as `drorch abort` does) as soon as `src` is asked for the call `cancel_at`."""
    handle = Handle(MoveRequest("web", Strategy.CHECKPOINT, src.ep, dst.ep))
    jobs = Jobs()
    src.on_call = lambda name: jobs.cancel(handle) if name == cancel_at else None
    if cancel_at == "start":
        jobs.cancel(handle)
    flows = PodmanCheckpoints(jobs, lambda *_: None)
    return flows.move(handle, ORIGINAL, cast(PodmanSite, src), cast(PodmanSite, dst))


def test_a_checkpoint_that_cannot_be_taken_leaves_the_source_running_for_a_redeploy() -> None:
    src, dst = Service("a", fail="export"), Service("b")
    assert move(src, dst) == (None, "the checkpoint failed (Podman on site a: export refused)")
    assert src.calls == ["export"] and dst.calls == []


def test_a_failed_import_is_cleaned_up_and_the_source_restored_from_its_kept_checkpoint() -> None:
    src, dst = Service("a"), Service("b", fail="import")
    with pytest.raises(MoveFailed, match="restore of web on site b failed, restored on site a instead: Podman on "
                                         "site b: import refused"):
        move(src, dst)
    assert dst.calls == ["import", "remove half"]
    assert src.calls == ["export", "export closed", "restore here"]  # the stream is closed before the restore


def test_a_move_removes_the_source_once_the_import_restored_it() -> None:
    src, dst = Service("a"), Service("b")
    assert move(src, dst) == ("running on site b (restored from checkpoint)", "")
    assert src.calls == ["export", "export closed", "remove source"]


def test_a_move_cancelled_before_it_began_touches_neither_site() -> None:
    src, dst = Service("a"), Service("b")
    with pytest.raises(MoveCancelled, match="the move of web was cancelled; it stays on site a"):
        move(src, dst, cancel_at="start")
    assert src.calls == [] and dst.calls == []


def test_a_move_cancelled_once_exported_restores_the_source_from_its_checkpoint_and_imports_nothing() -> None:
    src, dst = Service("a"), Service("b")
    with pytest.raises(MoveCancelled, match="the move of web was cancelled; it stays on site a"):
        move(src, dst, cancel_at="export")
    assert src.calls == ["export", "export closed", "restore here"] and dst.calls == []


class DockerStandIn:
    """A Docker site answered from memory, whose removals the daemon refuses (one already in progress)."""

    def __init__(self, site: str, containers: dict[str, dict[str, Any]]) -> None:
        self.ep = Endpoint(site, f"unix:///{site}.sock")
        self.containers = containers

    def inspect(self, name: str) -> dict[str, Any] | None:
        return self.containers.get(name)

    @property
    def api(self) -> DockerStandIn:
        return self

    def remove_container(self, container: str, force: bool, v: bool) -> None:
        response = requests.Response()
        response.status_code = 409
        raise APIError("409 Conflict", response, "removal of container web is already in progress")


def test_a_daemon_refusing_the_preparation_of_a_move_fails_the_move_with_its_reason() -> None:
    """Not an internal error: a step that fails, saying why, which a resume can retry."""
    running = {"Id": "c0ffee", "Name": "/web", "State": {"Running": True}, "Config": {"Image": "web", "Labels": {}}}
    stale = {"Id": "deadbeef", "Name": "/web", "State": {"Running": False}, "Config": {"Image": "web", "Labels": {}}}
    sites = {"a": DockerStandIn("a", {"web": running}), "b": DockerStandIn("b", {"web": stale})}
    driver = ContainerDriver()
    driver._site = lambda ep: cast(DockerSite, sites[ep.site])  # type: ignore[method-assign]
    request = MoveRequest("web", Strategy.REDEPLOY, sites["a"].ep, sites["b"].ep)
    with pytest.raises(MoveFailed, match=r"container web: the move could not begin: .*removal of container web is "
                                         r"already in progress"):
        driver.start_move(request)


class Helpers:
    """A daemon's helper containers, labelled with their owners; removals are recorded."""

    def __init__(self, owners: dict[str, str]) -> None:
        self.owners = owners
        self.removed: list[str] = []

    def containers(self, all: bool, filters: dict[str, str]) -> list[dict[str, Any]]:
        assert all and filters == {"label": HELPER_LABEL}
        return [{"Id": name, "Names": [f"/{name}"], "Labels": {HELPER_LABEL: owner}}
                for name, owner in self.owners.items()]

    def remove_container(self, container: str, force: bool, v: bool) -> None:
        self.removed.append(container)


def test_helpers_of_dead_processes_go_and_those_of_live_ones_stay() -> None:
    here = socket.gethostname()
    api = Helpers({"drorch-in-mine": HELPER_OWNER, "drorch-in-dead": f"{here}:{2**22 + 7}",
                   "drorch-in-elsewhere": "other-machine:42", "drorch-in-old": "1"})
    site = DockerSite.__new__(DockerSite)
    site.api = api  # type: ignore[assignment]
    assert site.drop_stale_helpers() == ["drorch-in-dead", "drorch-in-old"]
    assert api.removed == ["drorch-in-dead", "drorch-in-old"]
