from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from drorch.errors import PlaybookError
from drorch.model.playbook import STRATEGIES, Mappings, Playbook, Strategy, WorkloadKind
from drorch.model.playbook_file import load_playbook, parse_playbook
from tests.support.shop import PLAYBOOK

EXAMPLES = sorted((Path(__file__).parent.parent / "playbooks").glob("*.yaml"))


def problems(text: str) -> list[str]:
    with pytest.raises(PlaybookError) as err:
        parse_playbook(text, "pb.yaml")
    return err.value.problems


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_loads_and_round_trips(path: Path) -> None:
    pb = load_playbook(path)
    again = parse_playbook(yaml.safe_dump(pb.model_dump(mode="json", exclude_none=True)), "dump.yaml")
    assert again == pb


def test_examples_exist() -> None:
    assert any(p.name == "lab.yaml" for p in EXAMPLES)


def test_defaults() -> None:
    pb = parse_playbook(PLAYBOOK.replace(", strategy: live", ""), "pb.yaml")
    assert pb.workloads[0].move_strategy is Strategy.LIVE
    assert pb.workloads[0].selector == "db"
    assert pb.tier_of(pb.workloads[0]).on_shortage == "required"
    assert pb.wave_names() == ["default"]


def test_yaml_syntax_error_names_file_line_and_column() -> None:
    text = PLAYBOOK.replace("primary: a", "primary: [a")
    (p,) = problems(text)
    assert p.startswith("pb.yaml:3:") and "expected" in p


def test_unknown_key_points_at_the_key() -> None:
    text = PLAYBOOK.replace("  - {name: db, kind: vm, strategy: live}",
                            "  - name: db\n    kind: vm\n    stratgey: live")
    (p,) = problems(text)
    assert p == "pb.yaml:10:5: workloads.0.stratgey: Extra inputs are not permitted"


def test_several_problems_are_reported_at_once() -> None:
    text = PLAYBOOK.replace("kind: vm, strategy: live", "kind: vm, strategy: checkpoint").replace(
        "secondary: b", "secondary: c").replace("kind: container, strategy: redeploy", "kind: pod")
    assert problems(text) == ["pb.yaml:10:23: workloads.2.kind: Input should be 'vm', 'container' or 'lxd'"]
    # The schema problem stops the cross-field checks; fix it and both reference problems show together.
    text = text.replace("kind: pod", "kind: container")
    found = problems(text)
    assert found == [
        "pb.yaml:3:12: site 'c' is not defined under sites (a, b)",
        "pb.yaml:8:36: strategy checkpoint does not apply to a vm (live, cold, replica)",
    ]


def test_missing_endpoint_for_a_kind() -> None:
    text = PLAYBOOK.replace('{name: b1, libvirt: "fake://b1/libvirt", docker: "fake://b1/docker"}',
                            '{name: b1, docker: "fake://b1/docker"}')
    assert problems(text) == ["pb.yaml:8:5: vm 'db' needs a host with libvirt on site 'b'"]


def test_duplicate_workload_and_same_sites() -> None:
    text = PLAYBOOK.replace("secondary: b", "secondary: a").replace("name: web", "name: cache")
    assert problems(text) == [
        "pb.yaml:3:12: primary and secondary must be different sites",
        "pb.yaml:10:12: container 'cache' is listed twice",
    ]


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string"])
def test_not_a_mapping(text: str) -> None:
    assert problems(text) == ["pb.yaml:1:1: a playbook is a YAML mapping (sites, workloads, ...)"]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(PlaybookError, match=r"missing\.yaml: cannot read: No such file"):
        load_playbook(tmp_path / "missing.yaml")


names = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)


@st.composite
def playbooks(draw: st.DrawFn) -> Playbook:
    a, b = draw(st.lists(names, min_size=2, max_size=2, unique=True))
    sites = {s: {"hosts": [{"name": f"{s}1", "libvirt": f"qemu+tcp://{s}/system", "docker": f"unix:///run/{s}.sock",
                            "lxd": f"unix:///run/{s}-lxd.sock"}]} for s in (a, b)}
    workloads = []
    for i, name in enumerate(draw(st.lists(names, min_size=1, max_size=8, unique=True))):
        kind = draw(st.sampled_from(list(WorkloadKind)))
        strategy = draw(st.sampled_from([None, *STRATEGIES[kind]]))
        workloads.append({"name": f"{name}{i}", "kind": kind.value,
                          **({"strategy": strategy.value} if strategy else {})})
    return Playbook.model_validate(
        {"name": "p", "primary": a, "secondary": b, "sites": sites, "workloads": workloads})


@settings(max_examples=60, deadline=None)
@given(playbooks())
def test_any_valid_playbook_round_trips_through_yaml(pb: Playbook) -> None:
    text = yaml.safe_dump(pb.model_dump(mode="json", exclude_none=True))
    assert parse_playbook(text, "gen.yaml") == pb


def test_a_host_runs_docker_or_podman() -> None:
    both = PLAYBOOK.replace('docker: "fake://b1/docker"}', 'docker: "fake://b1/docker", podman: "unix:///p.sock"}')
    assert problems(both) == ["pb.yaml:6:92: host 'b1' lists both docker and podman: a host's containers are run "
                              "by one engine"]
    pb = parse_playbook(PLAYBOOK.replace('docker: "fake://b1/docker"', 'podman: "unix:///p.sock"'), "pb.yaml")
    b1 = pb.hosts("b")[0]
    assert (b1.endpoint(WorkloadKind.CONTAINER), b1.engine(WorkloadKind.CONTAINER)) == ("unix:///p.sock", "podman")
    assert pb.hosts("a")[0].engine(WorkloadKind.CONTAINER) == "docker"


def test_an_image_mapping_applies_to_the_name_podman_shows() -> None:
    m = Mappings(images={"shop/web:1": "dr/web:1", "redis:7": "dr/redis:7"})
    assert [m.image(n) for n in ("shop/web:1", "docker.io/shop/web:1", "docker.io/library/redis:7", "q/x:1")] == [
        "dr/web:1", "dr/web:1", "dr/redis:7", "q/x:1"]


def test_an_lxd_host_over_https_needs_its_certificates_and_lxd_kinds_take_lxd_strategies() -> None:
    bare = PLAYBOOK.replace('docker: "fake://b1/docker"', 'lxd: "https://b1:8443"')
    assert ("pb.yaml:6:61: host 'b1': an https:// LXD endpoint needs lxd_tls (client certificate and the server's, "
            "pinned)") in problems(bare)
    pb = parse_playbook(PLAYBOOK.replace('docker: "fake://b1/docker"', 'docker: "fake://b1/docker", lxd: "unix:///l"'),
                        "pb.yaml")
    b1 = pb.hosts("b")[0]
    assert (b1.endpoint(WorkloadKind.LXD), b1.engine(WorkloadKind.LXD)) == ("unix:///l", "lxd")
    assert b1.endpoint(WorkloadKind.CONTAINER) == "fake://b1/docker"
    assert pb.hosts("a")[0].endpoint(WorkloadKind.LXD) is None
    assert STRATEGIES[WorkloadKind.LXD][0] is Strategy.COPY
    assert Mappings(profiles={"web": "web-dr"}).inverse().profile("web-dr") == "web"
