"""An instance landing where its points are kept, over a stand-in for LXD's API that behaves as LXD 5.0 does: a
refresh from another server deletes the target's snapshots the source does not send (it sends none), a refresh
from an instance of the same server leaves them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from drorch.drivers.base import Endpoint
from drorch.drivers.lxd._lxd_config import STAGE_KEY
from drorch.drivers.lxd._lxd_stage import drop_stage, land, stage_name


@dataclass
class Server:
    name: str
    held: dict[str, dict[str, Any]] = field(default_factory=dict)  # instance -> {"config", "snapshots"}
    made: list[tuple[str, str]] = field(default_factory=list)  # (instance, how)

    @property
    def ep(self) -> Endpoint:
        return Endpoint(self.name, f"https://{self.name}:8443", engine="lxd")

    def instance(self, name: str) -> dict[str, Any] | None:
        return self.held.get(name)

    def snapshots(self, name: str) -> list[str]:
        return list(self.held.get(name, {}).get("snapshots", []))

    def source_of(self, name: str, live: bool) -> dict[str, Any]:
        return {"type": "migration", "mode": "pull", "instance_only": True}

    def create(self, body: dict[str, Any]) -> None:
        name, source = body["name"], body["source"]
        there = self.held.get(name)
        if source["type"] == "copy":
            assert source["refresh"] and source["instance_only"] and source["source"] in self.held
            kept = there["snapshots"] if there else []
        else:
            kept = []  # a refresh from another server deletes what the source does not send
        self.held[name] = {"config": body["config"], "snapshots": kept}
        self.made.append((name, f"{source['type']}{' refresh' if source.get('refresh') else ''}"))

    def delete(self, name: str) -> bool:
        return self.held.pop(name, None) is not None


BODY: dict[str, Any] = {"name": "sys", "config": {"user.drorch.point": "1"}, "devices": {}}


def test_a_first_copy_and_a_copy_with_no_points_are_made_straight_from_the_source() -> None:
    src, dst = Server("a", {"sys": {"config": {}}}), Server("b")
    land(src, dst, "sys", BODY, None)  # type: ignore[arg-type]
    land(src, dst, "sys", BODY, dst.instance("sys"))  # type: ignore[arg-type]
    assert dst.made == [("sys", "migration"), ("sys", "migration refresh")]


def test_a_copy_that_keeps_points_is_refreshed_through_its_stage_and_keeps_them() -> None:
    src = Server("a", {"sys": {"config": {}}})
    dst = Server("b", {"sys": {"config": BODY["config"], "snapshots": ["drorch-1", "drorch-2"]}})
    for _ in range(2):
        land(src, dst, "sys", BODY, dst.instance("sys"))  # type: ignore[arg-type]
        assert dst.snapshots("sys") == ["drorch-1", "drorch-2"]
    stage = stage_name("sys")
    assert dst.made == [(stage, "migration"), ("sys", "copy refresh"), (stage, "migration refresh"),
                        ("sys", "copy refresh")]  # the second time only what changed crosses
    assert dst.held[stage]["config"][STAGE_KEY] == "1"  # hidden from the inventory
    drop_stage(dst, "sys")  # type: ignore[arg-type]
    assert sorted(dst.held) == ["sys"]
