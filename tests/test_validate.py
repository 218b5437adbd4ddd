"""`drorch validate`, `plan`, `inventory` and `schema` over the fake drivers: problems as file:line:col."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drorch.drivers.fake import FakeCloud, FakeSite, FakeWorkload
from drorch.errors import PlaybookError
from drorch.model.playbook import WorkloadKind
from drorch.model.playbook_file import parse_playbook
from drorch.plan.inventory import HostFacts
from tests.support.cli import drorch
from tests.support.shop import uri

pytestmark = pytest.mark.usefixtures("fake_cli")

ESTATE = """\
name: shop
primary: a
secondary: b
sites:
  a:
    hosts:
      - {name: a1, libvirt: "fake://a1/libvirt", docker: "fake://a1/docker"}
  b:
    hosts:
      - name: b1
        libvirt: "fake://b1/libvirt"
        docker: "fake://b1/docker"
        capacity: {vcpus: 4, memory_mib: 512}
mappings:
  networks: {prod-net: dr-net}
  images: {"shop/web:1": "dr/web:1"}
tiers:
  gold: {priority: 0, on_shortage: required}
  tin: {priority: 9, on_shortage: skip}
waves:
  - name: data
  - name: apps
workloads:
  - name: db
    kind: vm
    tier: gold
    wave: data
  - name: web
    kind: container
    strategy: redeploy
    tier: tin
    wave: apps
    depends_on: [db]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(PlaybookError) as err:
        parse_playbook(text, "pb.yaml")
    return err.value.problems


@pytest.mark.parametrize(("change", "expected"), [
    (("tier: tin", "tier: lead"), "pb.yaml:31:11: tier 'lead' is not defined under tiers (gold, tin)"),
    (("wave: apps\n    depends_on", "wave: later\n    depends_on"), "pb.yaml:32:11: wave 'later' is not defined "
                                                                     "under waves"),
    (("depends_on: [db]", "depends_on: [dbx]"), "pb.yaml:33:18: depends on 'dbx', which no workload entry selects"),
    (("  - name: data\n  - name: apps", "  - name: apps\n  - name: data"),
     "pb.yaml:33:18: depends on 'db', which moves in the later wave 'data'"),
    (("{prod-net: dr-net}", "{prod-net: dr-net, test-net: dr-net}"),
     "pb.yaml:15:42: networks 'prod-net' and 'test-net' both map to 'dr-net': the reverse mapping for failing "
     "back would be ambiguous"),
    (("  - name: db\n", "  - name: db\n    match: d*\n"), "pb.yaml:24:5: a workload entry selects by exactly one "
                                                            "of name, match or labels"),
])
def test_reference_problems_point_at_their_line(change: tuple[str, str], expected: str) -> None:
    assert expected in problems(ESTATE.replace(*change))


def test_a_dependency_cycle_is_reported_once_with_its_path() -> None:
    text = ESTATE.replace("    tier: gold\n    wave: data\n", "    tier: gold\n    wave: apps\n    depends_on: [web]\n")
    assert problems(text) == ["pb.yaml:28:17: dependency cycle: db -> web -> db"]


@pytest.fixture
def estate_file(tmp_path: Path) -> Path:
    path = tmp_path / "estate.yaml"
    path.write_text(ESTATE)
    return path


@pytest.fixture
def estate_cloud(cloud: FakeCloud, estate_file: Path) -> FakeCloud:
    """Replaces the shop cloud: db and web on a1; b1 has dr-net and the mapped image."""
    pb = parse_playbook(ESTATE, "estate.yaml")
    cloud.sites.clear()
    for site in ("a", "b"):
        for kind in (WorkloadKind.VM, WorkloadKind.CONTAINER):
            nets = ("prod-net",) if site == "a" else ("dr-net",)
            images = ("shop/web:1",) if site == "a" else ("dr/web:1",)
            cloud.sites[uri(pb, kind, site)] = FakeSite(
                facts=HostFacts(vcpus=8, memory_mib=8192, networks=(*nets, "none"), images=images, checkpoints=True))
    cloud.sites[uri(pb, WorkloadKind.VM, "a")].workloads["db"] = FakeWorkload(
        WorkloadKind.VM, memory_mib=256, networks=("prod-net",))
    cloud.sites[uri(pb, WorkloadKind.CONTAINER, "a")].workloads["web"] = FakeWorkload(
        WorkloadKind.CONTAINER, memory_mib=384, image="shop/web:1", networks=("none",))
    return cloud


def test_validate_ok(capsys: pytest.CaptureFixture[str], estate_file: Path, estate_cloud: FakeCloud) -> None:
    code, out, err = drorch(capsys, "validate", str(estate_file))
    assert (code, err) == (0, "")
    assert out == (f"{estate_file}: ok (2 workloads, site a -> site b)\n  wave data (1 at a time): db\n"
                   "  wave apps (1 at a time): web\n")


def test_validate_reports_every_problem_with_its_line_and_exits_1(
    capsys: pytest.CaptureFixture[str], estate_file: Path, estate_cloud: FakeCloud
) -> None:
    estate_file.write_text(ESTATE.replace("{prod-net: dr-net}", "{prod-net: drnet}").replace(
        "memory_mib: 512", "memory_mib: 200"))
    estate_cloud.sites["fake://a1/docker"].reachable = False
    code, out, err = drorch(capsys, "validate", str(estate_file))
    assert code == 1 and out == ""
    f = str(estate_file)
    assert err.splitlines() == [
        f"{f}:24:5: vm 'db' does not fit: site b is short of room: needs 1 vCPU, 256 MiB, most free 4 vCPU, 200 MiB",
        f"{f}:7:9: site a: fake://a1/docker does not answer",
    ]


def test_validate_a_mapping_that_points_nowhere(
    capsys: pytest.CaptureFixture[str], estate_file: Path, estate_cloud: FakeCloud
) -> None:
    estate_file.write_text(ESTATE.replace("{prod-net: dr-net}", "{prod-net: drnet}").replace(
        '"dr/web:1"}', '"dr/web:2"}').replace("memory_mib: 512", "memory_mib: 1024"))
    code, _, err = drorch(capsys, "validate", str(estate_file))
    f = str(estate_file)
    assert code == 1
    assert err.splitlines() == [
        f"{f}:15:24: vm db: network 'drnet' does not exist on site b host b1 (dr-net, none)",
        f"{f}:16:26: container web: image 'dr/web:2' is neither on site b nor at home to send",
    ]


@pytest.mark.parametrize(("engines", "facts", "said"), [
    (("docker", "docker"), {"checkpoints": False, "checkpoint_problem": "runs without --experimental, which "
                            "checkpoints need"},
     "Docker on site b host b1 runs without --experimental, which checkpoints need"),
    (("podman", "podman"), {"checkpoints": False, "checkpoint_problem": "runs rootless: CRIU needs a rootful "
                            "Podman service"},
     "Podman on site b host b1 runs rootless: CRIU needs a rootful Podman service"),
    (("docker", "podman"), {}, "a Docker checkpoint from host a1 cannot be restored by Podman on site b host b1"),
])
def test_validate_names_the_host_where_checkpoints_fall_back(
    capsys: pytest.CaptureFixture[str], estate_file: Path, estate_cloud: FakeCloud, engines: tuple[str, str],
    facts: dict[str, object], said: str,
) -> None:
    text = ESTATE.replace("strategy: redeploy", "strategy: checkpoint").replace("memory_mib: 512", "memory_mib: 1024")
    if engines[1] == "podman":
        text = text.replace('        docker: "fake://b1/docker"', '        podman: "fake://b1/docker"')
    estate_file.write_text(text)
    for host, engine in zip(("a1", "b1"), engines, strict=True):
        site = estate_cloud.sites[f"fake://{host}/docker"]
        site.facts = HostFacts(**{**site.facts.__dict__, "engine": engine, **(facts if host == "b1" else {})})
    code, _, err = drorch(capsys, "validate", str(estate_file))
    assert code == 0, err
    assert err == f"{estate_file}:10:9: warning: container web: {said}: the move falls back to a redeploy\n"


def test_malformed_playbook_validates_with_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(ESTATE.replace("kind: vm", "kind: vn"))
    code, _, err = drorch(capsys, "validate", str(bad))
    assert code == 1 and err == f"{bad}:25:11: workloads.0.kind: Input should be 'vm', 'container' or 'lxd'\n"


def test_workloads_that_name_no_wave_are_said_to_run_last_one_at_a_time(
    capsys: pytest.CaptureFixture[str], estate_file: Path, estate_cloud: FakeCloud
) -> None:
    estate_file.write_text(ESTATE.replace("  - name: apps", "  - name: apps\n    parallel: 4").replace(
        "    wave: apps\n", ""))
    f = str(estate_file)
    note = ("1 workload names no wave (web): it runs in wave 'default', which waves does not declare: after wave "
            "'apps', one at a time; give each a wave, or declare wave 'default' with its parallel")
    code, out, err = drorch(capsys, "validate", f)
    assert code == 0 and err == f"{f}:21:3: warning: {note}\n", err
    code, out, err = drorch(capsys, "plan", f)
    assert code == 0 and err == f"{f}:21:3: note: {note}\n", err
    code, out, _ = drorch(capsys, "plan", f, "--json")
    assert json.loads(out)["notes"] == [{"at": ["waves"], "message": note}]
    estate_file.write_text(ESTATE)  # every workload in a declared wave: nothing to say
    assert drorch(capsys, "plan", f)[2] == ""


def test_inventory_then_plan_offline(
    capsys: pytest.CaptureFixture[str], estate_file: Path, estate_cloud: FakeCloud, tmp_path: Path
) -> None:
    code, out, _ = drorch(capsys, "inventory", str(estate_file), "--json")
    assert code == 0
    saved = tmp_path / "snapshot.json"
    saved.write_text(out)
    live = drorch(capsys, "plan", str(estate_file), "--json")
    estate_cloud.sites.clear()  # the sites are gone: the saved snapshot still answers
    offline = drorch(capsys, "plan", str(estate_file), "--inventory", str(saved), "--json")
    assert live == offline and live[0] == 0
    items = json.loads(offline[1])["items"]
    assert [(i["workload"], i["action"], i["to_host"]) for i in items] == [("db", "move", "b1"),
                                                                          ("web", "skip", None)]
    code, out, _ = drorch(capsys, "plan", str(estate_file), "--inventory", str(saved))
    assert code == 0 and "left behind: site b is short of room" in out
    assert out.splitlines()[2].split()[:8] == ["1", "data", "db", "vm", "gold", "move", "a1", "b1"]


def test_plan_with_problems_exits_1(capsys: pytest.CaptureFixture[str], estate_file: Path,
                                    estate_cloud: FakeCloud) -> None:
    estate_file.write_text(ESTATE.replace("memory_mib: 512", "memory_mib: 100"))
    code, out, err = drorch(capsys, "plan", str(estate_file))
    assert code == 1 and "unplaced" in out
    assert err.startswith(f"{estate_file}:24:5: vm 'db' does not fit")


def test_failover_refuses_a_plan_with_problems_and_touches_nothing(
    capsys: pytest.CaptureFixture[str], estate_file: Path, estate_cloud: FakeCloud
) -> None:
    estate_file.write_text(ESTATE.replace("memory_mib: 512", "memory_mib: 100"))
    code, out, err = drorch(capsys, "failover", str(estate_file))
    assert code == 1 and out == ""
    assert err.startswith(f"{estate_file}:24:5: vm 'db' does not fit")
    assert "db" in estate_cloud.sites["fake://a1/libvirt"].workloads


def test_failover_lands_the_plan_with_mappings_and_says_what_stayed(
    capsys: pytest.CaptureFixture[str], estate_file: Path, estate_cloud: FakeCloud
) -> None:
    code, out, _ = drorch(capsys, "failover", str(estate_file))
    assert code == 0
    assert "[2/2] container web: skipped: left behind: site b is short of room" in out
    assert out.strip().endswith("1 left behind as planned")
    assert estate_cloud.sites["fake://b1/libvirt"].workloads["db"].networks == ("dr-net",)
    assert "web" in estate_cloud.sites["fake://a1/docker"].workloads
    code, out, _ = drorch(capsys, "history", "1", "--json")
    steps = json.loads(out)["steps"]
    assert [(s["workload"], s["action"], s["state"], s["to_host"]) for s in steps] == [
        ("db", "move", "succeeded", "b1"), ("web", "skip", "skipped", None)]


def test_schema_is_json_schema_of_the_playbook(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = drorch(capsys, "schema")
    schema = json.loads(out)
    assert code == 0 and schema["title"] == "Playbook"
    assert {"sites", "mappings", "tiers", "waves", "workloads"} <= set(schema["properties"])
