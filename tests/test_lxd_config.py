"""An LXD instance as the API describes it: read into drorch's terms and mapped onto the other site."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from drorch.drivers.containers.docker_config import clone_config
from drorch.drivers.lxd._lxd_config import (
    POINT_KEY,
    bridge_name,
    container_view,
    cpus,
    info,
    instance_from_container,
    is_point_copy,
    isolated_devices,
    memory_mib,
    missing_names,
    point_names,
    target_body,
)
from drorch.model.playbook import Mappings, Resources, WorkloadKind


def instance(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "web", "type": "container", "architecture": "x86_64", "status": "Running",
        "profiles": ["default", "web"],
        "config": {"limits.memory": "256MiB", "limits.cpu": "0-1", "user.tier": "gold",
                   "volatile.base_image": "ab" * 32, "volatile.idmap.base": "0", POINT_KEY: "1"},
        "devices": {"eth0": {"type": "nic", "network": "prod-br"}, "data": {"type": "disk", "pool": "fast",
                                                                              "source": "vol", "path": "/data"}},
        "expanded_devices": {"root": {"type": "disk", "pool": "default", "path": "/"},
                             "eth0": {"type": "nic", "network": "prod-br"},
                             "eth1": {"type": "nic", "nictype": "bridged", "parent": "br1"}},
    }
    return {**base, **over}


def test_sizes_read_as_lxd_writes_them() -> None:
    assert memory_mib("256MiB") == 256
    assert memory_mib("1GB") == 953
    assert memory_mib("2GiB") == 2048
    assert memory_mib("50%") is None and memory_mib(None) is None
    assert cpus("2") == 2 and cpus("0-1,4") == 3 and cpus("x") is None and cpus(None) is None


@given(st.integers(min_value=0, max_value=1 << 20))
def test_a_count_of_mib_reads_back(mib: int) -> None:
    assert memory_mib(f"{mib}MiB") == mib


def test_info_says_what_runs_where_with_its_labels_networks_and_pools() -> None:
    w = info(instance(config={**instance()["config"], "limits.memory": "128MiB"}), "a", "a1")
    assert (w.name, w.kind, w.site, w.host, w.running) == ("web", WorkloadKind.LXD, "a", "a1", True)
    assert (w.memory_mib, w.vcpus, w.image) == (128, 2, "ab" * 6)
    assert w.labels == {"tier": "gold"}  # drorch's own keys are not the user's labels
    assert w.networks == ("br1", "prod-br") and w.pools == ("default",)
    assert w.status == ""
    stopped = info(instance(status="Stopped", type="virtual-machine"), "b", "b1")
    assert not stopped.running and stopped.status == "stopped (virtual-machine)"


def test_the_body_on_the_target_maps_profiles_networks_and_pools_and_drops_drorchs_keys() -> None:
    m = Mappings(networks={"prod-br": "dr-br"}, storage={"fast": "slow"}, profiles={"web": "web-dr"})
    body = target_body(instance(), m, Resources(memory_mib=64, vcpus=1))
    assert body["profiles"] == ["default", "web-dr"]
    assert body["devices"]["eth0"] == {"type": "nic", "network": "dr-br"}
    assert body["devices"]["data"]["pool"] == "slow"
    assert POINT_KEY not in body["config"] and body["config"]["volatile.idmap.base"] == "0"
    assert body["config"]["limits.memory"] == "64MiB" and body["config"]["limits.cpu"] == "1"
    fresh = target_body(instance(), m, volatile=False)
    assert not [k for k in fresh["config"] if k.startswith("volatile.")]


def test_what_the_target_lacks_is_named_after_mapping() -> None:
    m = Mappings(profiles={"web": "web-dr"})
    assert missing_names(instance(), m, ["default", "web-dr"], ["prod-br"], ["fast"]) == []
    assert missing_names(instance(), Mappings(), ["default"], [], []) == [
        'profile "web"', 'network "prod-br"', 'storage pool "fast"']


def test_a_drill_bridge_is_named_as_an_interface_may_be() -> None:
    assert bridge_name("drorch-drill-7") == "drorch-drill-7"
    long = bridge_name("drorch-drill-12345")
    assert len(long) == 15 and long.startswith("drd") and long == bridge_name("drorch-drill-12345")
    assert long != bridge_name("drorch-drill-12346")
    assert isolated_devices(instance(), "drorch-drill-12345")["eth0"]["network"] == long


def test_a_drill_clone_has_every_nic_on_the_drill_network_only() -> None:
    assert isolated_devices(instance(), "drill-7") == {"eth0": {"type": "nic", "network": "drill-7"},
                                                       "eth1": {"type": "nic", "network": "drill-7"}}
    assert isolated_devices(instance(expanded_devices={}, devices={}), "drill-7") == {}
    assert isolated_devices(instance(), "drill-7", ("10.82.0.10",))["eth0"] == {
        "type": "nic", "network": "drill-7", "ipv4.address": "10.82.0.10"}


def test_points_are_drorchs_snapshots_and_a_point_copy_is_marked() -> None:
    assert point_names(["before-upgrade", "drorch-1", "drorch-2"]) == ["drorch-1", "drorch-2"]
    assert is_point_copy(instance()) and not is_point_copy(instance(config={}))


def test_an_instance_lands_as_a_container_with_what_a_container_has() -> None:
    inst = instance(config={"limits.memory": "256MiB", "limits.cpu": "2", "user.tier": "gold",
                            "environment.MODE": "dr", "volatile.base_image": "ab" * 32, POINT_KEY: "1"})
    body = clone_config(container_view(inst), Mappings(images={"ab" * 6: "shop/web:2"},
                                                       networks={"prod-br": "dr-lan"}))
    assert body["Image"] == "shop/web:2" and body["Env"] == ["MODE=dr"]
    assert body["Labels"] == {"tier": "gold"}  # drorch's own keys stay behind
    assert body["HostConfig"] == {"NetworkMode": "dr-lan", "Memory": 256 << 20, "NanoCpus": 2 * 10**9}


def test_an_instance_without_a_nic_lands_on_no_network() -> None:
    inst = instance(devices={}, expanded_devices={}, profiles=[])
    assert container_view(inst)["HostConfig"]["NetworkMode"] == "none"


def test_a_container_comes_back_as_an_instance_made_from_the_image_it_maps_back_to() -> None:
    c = {"Name": "/web", "Config": {"Image": "shop/web:2", "Env": ["PATH=/bin", "MODE=dr"],
                                    "Labels": {"tier": "gold", "drorch.point": "1"}},
         "HostConfig": {"NetworkMode": "dr-lan", "Memory": 256 << 20, "NanoCpus": 2 * 10**9}}
    body = instance_from_container(c, {"alias": "web-image"}, Mappings(networks={"dr-lan": "lan"}))
    assert body["source"] == {"type": "image", "alias": "web-image"} and body["name"] == "web"
    assert body["config"] == {"environment.MODE": "dr", "user.tier": "gold", "limits.memory": "256MiB",
                              "limits.cpu": "2"}
    assert body["devices"] == {"eth0": {"type": "nic", "network": "lan"}}
