"""What the real drivers decide about data that travels, without a daemon: container configs for the
target, bind mounts and volumes, disk definitions and which pools can take a disk, and what a Podman
checkpoint can carry."""

from __future__ import annotations

import json
from typing import Any

import libvirt
import pytest

from drorch.drivers.base import Endpoint, MoveRequest
from drorch.drivers.containers._podman_checkpoints import import_obstacle, published
from drorch.drivers.containers.docker_config import (
    clone_config,
    clone_volume,
    drill_config,
    point_config,
    point_view,
    point_volume,
    point_volume_labels,
    restart_config,
    unmapped_binds,
    volumes,
    whole_points,
)
from drorch.drivers.containers.podman_engine import checkpoint_problem
from drorch.drivers.libvirt._connections import domain_status
from drorch.drivers.libvirt._disk_transfer import format_problem
from drorch.drivers.libvirt._domain_xml import disk_chain, point_disks_at, writable_disks
from drorch.errors import MoveFailed
from drorch.model.playbook import Mappings, Strategy

INSPECT: dict[str, Any] = {
    "Config": {"Image": "shop/web:1", "Hostname": "abc"},
    "HostConfig": {"Binds": ["/srv/www:/www:ro", "cache:/cache"], "NetworkMode": "none",
                   "Mounts": [{"Type": "bind", "Source": "/etc/shop", "Target": "/etc/shop"}]},
    "Mounts": [
        {"Type": "bind", "Source": "/srv/www", "Destination": "/www"},
        {"Type": "bind", "Source": "/etc/shop", "Destination": "/etc/shop"},
        {"Type": "volume", "Name": "cache", "Destination": "/cache"},
        {"Type": "volume", "Name": "4f0e" * 16, "Destination": "/data"},
    ],
}


def test_bind_mounts_need_a_mapped_path_and_get_it() -> None:
    m = Mappings(paths={"/srv/www": "/dr/www"})
    assert unmapped_binds(INSPECT, m) == ["/etc/shop"]
    assert unmapped_binds(INSPECT, Mappings(paths={"/srv/www": "/x", "/etc/shop": "/y"})) == []
    hc = clone_config(INSPECT, Mappings(paths={"/srv/www": "/dr/www", "/etc/shop": "/dr/shop"}))["HostConfig"]
    assert hc["Binds"] == ["/dr/www:/www:ro", "cache:/cache"]  # a named volume keeps its name
    assert hc["Mounts"][0]["Source"] == "/dr/shop"


def test_volumes_by_where_they_are_mounted_named_or_anonymous() -> None:
    assert volumes(INSPECT) == {"/cache": "cache", "/data": "4f0e" * 16}


DOMAIN = """<domain type='qemu'><name>vm</name><devices>
  <disk type='volume' device='disk'><driver name='qemu' type='qcow2'/><source pool='prod' volume='vm.qcow2'/>
    <target dev='vda'/></disk>
  <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/pool/data.raw'/>
    <target dev='vdb'/></disk>
  <disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='hdc'/><readonly/></disk>
  <disk type='file' device='disk'><source file='/pool/ro.raw'/><target dev='vdc'/><readonly/></disk>
</devices></domain>"""


def test_only_writable_disks_travel_and_land_where_they_were_copied() -> None:
    assert [d.find("target").get("dev") for d in writable_disks(DOMAIN)] == ["vda", "vdb"]  # type: ignore[union-attr]
    moved = point_disks_at(DOMAIN, {"prod/vm.qcow2": ("dr", "vm.qcow2@point-1"), "/pool/data.raw": ("dr", "data")})
    disks = [(d.get("type"), d.find("source").attrib) for d in writable_disks(moved)]  # type: ignore[union-attr]
    assert disks == [("volume", {"pool": "dr", "volume": "vm.qcow2@point-1"}),
                     ("volume", {"pool": "dr", "volume": "data"})]
    assert "/iso/x.iso" in moved and "/pool/ro.raw" in moved


def test_an_overlay_names_its_chain_and_a_copied_disk_stands_alone() -> None:
    """A restart's overlay reads the point's chain as the definition names it (first file first, ended by an
    empty backingStore); a disk copied elsewhere names none, whatever its source's definition said."""
    chain = [("/b/vm.qcow2@point-2.after-1", "qcow2"), ("/b/vm.qcow2@point-1", "raw")]
    over = point_disks_at(DOMAIN, {"prod/vm.qcow2": ("dr", "vm.qcow2")}, {"prod/vm.qcow2": chain})
    (disk, _) = writable_disks(over)
    assert disk_chain(disk) == chain and disk.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    assert disk.find("backingStore/backingStore/backingStore") is not None
    assert disk.find("backingStore/backingStore/backingStore/source") is None  # the chain ends there
    copied = point_disks_at(over, {"dr/vm.qcow2": ("prod", "vm.qcow2")})
    assert disk_chain(writable_disks(copied)[0]) == []


def test_a_drill_clone_gets_its_own_named_volumes() -> None:
    mounts = [{"Type": "volume", "Source": "logs", "Target": "/logs"},
              {"Type": "bind", "Source": "/etc/x", "Target": "/x"}]
    body = drill_config({**INSPECT, "HostConfig": {**INSPECT["HostConfig"], "Mounts": mounts}}, "web-drill-3",
                        "drorch-drill-3")
    assert body["HostConfig"]["Binds"] == ["/srv/www:/www:ro", "cache.web-drill-3:/cache"]
    assert body["HostConfig"]["Mounts"] == [{"Type": "volume", "Source": "logs.web-drill-3", "Target": "/logs"},
                                            {"Type": "bind", "Source": "/etc/x", "Target": "/x"}]
    assert clone_volume("cache", "web-drill-3") == "cache.web-drill-3"


COPY: dict[str, Any] = {"Id": "c0", "Mounts": [
    {"Type": "volume", "Name": "cache.drorch-point", "Destination": "/cache"},
    {"Type": "bind", "Source": "/srv/www", "Destination": "/www"}]}


def test_a_point_copy_names_its_volumes_apart_and_a_restart_takes_the_workloads_names() -> None:
    copy = point_config(INSPECT, Mappings(paths={"/srv/www": "/dr/www", "/etc/shop": "/dr/shop"}), None)
    assert copy["HostConfig"]["Binds"] == ["/dr/www:/www:ro", "cache.drorch-point:/cache"]
    assert copy["Labels"] == {"drorch.point": "1"}
    again = restart_config({"Config": copy, "HostConfig": copy["HostConfig"]})
    assert again["HostConfig"]["Binds"] == ["/dr/www:/www:ro", "cache:/cache"] and again["Labels"] == {}


def test_each_point_reads_volumes_of_its_own() -> None:
    view = point_view(COPY, "drorch-20261201T010203000000-ab")
    assert volumes(view) == {"/cache": "cache.drorch-20261201T010203000000-ab"}
    assert view["Mounts"][1] == COPY["Mounts"][1] and view["Id"] == "c0"  # binds and the checkpoints' container
    assert point_view(COPY, None) is COPY
    assert point_volume("cache", "p1") == point_volume("cache.drorch-point", "p1") == "cache.p1"


def test_a_point_is_whole_when_all_its_volumes_and_its_checkpoint_are_there() -> None:
    def vol(point: str, checkpoint: bool, name: str = "cache") -> dict[str, Any]:
        return {"Name": point_volume(name, point), "Labels": point_volume_labels("web", point, checkpoint)}

    found = [vol("p1", True), vol("p2", False), vol("p3", True), vol("p4", True, name="other")]
    # p1 has its checkpoint; p2 never had one; p3's checkpoint is gone; p4 lacks the /cache volume.
    assert whole_points(COPY, ["p1", "p4"], found) == ["p1", "p2"]
    assert whole_points({"Mounts": []}, ["p2", "p1"], found) == ["p1", "p2"]  # no volumes: the checkpoints


def test_pools_of_devices_take_raw_images_only() -> None:
    assert format_problem("dir", "qcow2") is None and format_problem("netfs", "qcow2") is None
    assert format_problem("logical", "raw") is None
    assert format_problem("logical", "qcow2") == "a logical pool takes raw images only, not qcow2"


def test_a_recorded_request_keeps_the_tls_files_and_no_secret() -> None:
    tls = ("/pki/ca.pem", "/pki/cert.pem", "/pki/key.pem")
    req = MoveRequest("web", Strategy.REDEPLOY, Endpoint("a", "tcp://a:2376?token=t0k", tls=tls),
                      Endpoint("b", "qemu+tls://admin:pw@b/system"))
    again = MoveRequest.from_dict(json.loads(json.dumps(req.to_dict())))
    assert again.source.tls == tls and again.target.tls is None
    assert again.source.uri == "tcp://a:2376?token=***" and again.target.uri == "qemu+tls://admin:***@b/system"


PODMAN_INFO: dict[str, Any] = {"host": {"security": {"rootless": False},
                                        "ociRuntime": {"name": "runc", "version": "runc version 1.1.5"}}}


def test_podman_checkpoints_need_a_rootful_service_and_a_runtime_with_criu() -> None:
    assert checkpoint_problem(PODMAN_INFO) is None
    rootless = {"host": {**PODMAN_INFO["host"], "security": {"rootless": True}}}
    assert checkpoint_problem(rootless) == "runs rootless: CRIU needs a rootful Podman service"
    crun = {"host": {**PODMAN_INFO["host"], "ociRuntime": {"name": "crun", "version": "crun 1.8\n+SYSTEMD +SECCOMP"}}}
    assert checkpoint_problem(crun) == "runs containers with crun, which was built without CRIU"
    crun["host"]["ociRuntime"]["version"] += " +CRIU"
    assert checkpoint_problem(crun) is None


def test_an_imported_podman_checkpoint_keeps_image_network_and_size() -> None:
    original = {"Config": {"Image": "shop/web:1"}, "HostConfig": {"NetworkMode": "prod-net"}}
    assert import_obstacle(Mappings(ports={80: 8080}), False, original) is None
    assert import_obstacle(Mappings(images={"shop/web:1": "dr/web:1"}), False, original) == (
        "the image is mapped to dr/web:1, and a restored checkpoint keeps shop/web:1")
    assert import_obstacle(Mappings(networks={"prod-net": "dr-net"}), False, original) == (
        "the network is mapped to dr-net, and a restored checkpoint keeps prod-net")
    assert import_obstacle(Mappings(), True, original) == (
        "the container is resized on the target, and a restored checkpoint keeps its size")


def test_podman_restore_gets_the_mapped_ports_only_when_they_change() -> None:
    original = {"HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
                                                "53/udp": [{"HostIp": "", "HostPort": "5353"}]}}}
    assert published(original, Mappings()) == []
    assert published(original, Mappings(ports={8080: 9090})) == ["5353:53/udp", "127.0.0.1:9090:80/tcp"]


def test_podman_ulimits_are_named_as_both_engines_take_them() -> None:
    podman = {"Config": {"Image": "i"}, "HostConfig": {"Ulimits": [{"Name": "RLIMIT_NOFILE", "Soft": 9, "Hard": 9}]}}
    assert clone_config(podman)["HostConfig"]["Ulimits"] == [{"Name": "nofile", "Soft": 9, "Hard": 9}]


def test_a_domain_paused_by_a_migration_is_not_where_its_guest_runs() -> None:
    """The target's end of a migration that has not ended holds only part of the guest: never taken for it."""
    paused, running = libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_RUNNING
    assert domain_status(paused, libvirt.VIR_DOMAIN_PAUSED_MIGRATION) == "paused by a migration that has not ended"
    assert "post-copy migration that failed" in domain_status(paused, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED)
    assert domain_status(paused, libvirt.VIR_DOMAIN_PAUSED_USER) == ""  # paused by its owner: it is there
    assert domain_status(running, libvirt.VIR_DOMAIN_RUNNING_MIGRATED) == ""
    assert domain_status(libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED) == "shut off (destroyed)"


def test_a_chain_missing_a_volume_says_which_and_leaves_the_site_to_its_caller() -> None:
    """The caller names the site ("... on site b"): the chain's own words must not say it again."""
    from drorch.drivers.libvirt._vm_points import PointVolume, chain

    vols = {"2": PointVolume("vda.qcow2@point-2.after-1", "2", "1")}
    with pytest.raises(MoveFailed) as found:
        chain(vols, "2")
    assert str(found.value).endswith("the volume of point-1 is missing") and "on the site" not in str(found.value)


class FlickeringPool:
    """A directory pool whose list lacks a volume the first times it is asked, as libvirt's can while other
    ships write into the pool."""

    def __init__(self, names: list[str], lacking: str, times: int) -> None:
        self.names, self.lacking, self.times, self.asked = names, lacking, times, 0

    def refresh(self, _flags: int) -> None:
        pass

    def listVolumes(self) -> list[str]:
        self.asked += 1
        return [n for n in self.names if n != self.lacking or self.asked > self.times]


class Target:
    def __init__(self, pool: FlickeringPool) -> None:
        self.pool = pool

    def storagePoolLookupByName(self, _name: str) -> FlickeringPool:
        return self.pool


@pytest.mark.parametrize("times, whole", [(2, True), (9, False)])
def test_a_pool_list_lacking_part_of_a_chain_is_asked_for_again(times: int, whole: bool,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A brief gap in the list does not make a point's chain look broken; a lasting one does, after a few asks;
    a list wanted for no chain is asked for once."""
    from drorch.drivers.base import Retention
    from drorch.drivers.libvirt import _vm_ship
    from drorch.drivers.libvirt._disk_transfer import Disk
    from drorch.drivers.libvirt._vm_points import intact, volume_name

    monkeypatch.setattr(_vm_ship, "RELIST_S", (0.0, 0.0, 0.0))
    names = [volume_name("vda.qcow2", "1", None), volume_name("vda.qcow2", "2", "1")]
    pool = FlickeringPool(names, names[0], times)
    disk = Disk("/p/vda.qcow2", "vda", "default", "vda.qcow2", "qcow2", 1 << 20, 0, "/p/vda.qcow2")
    shipper = _vm_ship.Shipper(None, None, Target(pool), [(disk, "default")], "3",  # type: ignore[arg-type]
                               Retention())
    assert intact(shipper._target_vols(disk, "default", "2"), "2") is whole
    assert pool.asked == min(times + 1, 4)
    shipper.target = Target(FlickeringPool(names, names[0], 1))  # type: ignore[assignment]
    assert "1" not in shipper._target_vols(disk, "default")
