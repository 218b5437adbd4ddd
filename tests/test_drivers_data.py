"""What the real drivers decide about data that travels, without a daemon: container configs for the
target, bind mounts and volumes, disk definitions and which pools can take a disk."""

from __future__ import annotations

import json
from typing import Any

from drorch.drivers.base import Endpoint, MoveRequest
from drorch.drivers.docker_config import clone_config, unmapped_binds, volumes
from drorch.drivers.libvirt_storage import format_problem
from drorch.drivers.libvirt_xml import point_disks_at, writable_disks
from drorch.playbook import Mappings, Strategy

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
