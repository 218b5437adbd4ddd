"""Passwords and tokens reach the drivers and hooks that need them, and nothing else: not the output, the
--json, the logs, the reports or the state store. Names from the sites are escaped in HTML reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from drorch.drivers.fake import FakeCloud, FakeSite, FakeWorkload
from drorch.engine import hooks
from drorch.model.playbook import WorkloadKind
from drorch.redact import redact
from drorch.store.sql_store import Store
from tests.support.cli import drorch

SECRET, TOKEN = "s3cr3t-pw", "t0k3n-value"
EVIL = "<script>alert(1)</script>"
pytestmark = pytest.mark.usefixtures("fake_cli")
PLAYBOOK = f"""\
name: shop
primary: a
secondary: b
sites:
  a: {{hosts: [{{name: a1, libvirt: "fake://admin:{SECRET}@a1/libvirt", docker: "fake://a1/docker?token={TOKEN}"}}]}}
  b: {{hosts: [{{name: b1, libvirt: "fake://admin:{SECRET}@b1/libvirt", docker: "fake://b1/docker?token={TOKEN}"}}]}}
readiness: {{webhook: "http://127.0.0.1:9/hook?access_token={TOKEN}"}}
workloads:
  - name: db
    kind: vm
    strategy: live
    hooks:
      before:
        - {{http: "http://127.0.0.1:9/health?api_key={TOKEN}", timeout: 1, on_error: continue}}
        - {{run: [echo, "{EVIL}"], on_error: continue}}
  - {{labels: {{tier: web}}, kind: container, strategy: redeploy}}
"""


@pytest.mark.parametrize("text, shown", [
    (f"libvirt at qemu+tls://admin:{SECRET}@host/system: no", "libvirt at qemu+tls://admin:***@host/system: no"),
    (f"POST https://hooks.example/x?token={TOKEN}&ok=1 failed", "POST https://hooks.example/x?token=***&ok=1 failed"),
    (f"'postgresql://drorch:{SECRET}@db/drorch'", "'postgresql://drorch:***@db/drorch'"),
    ("unix:///run/docker.sock and tcp://10.0.0.1:2376", "unix:///run/docker.sock and tcp://10.0.0.1:2376"),
])
def test_redact(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_hooks_do_not_inherit_the_store_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRORCH_DB_URL", f"postgresql://drorch:{SECRET}@db/drorch")
    monkeypatch.setenv("KEEP_ME", "1")
    env = hooks._inherited()
    assert "DRORCH_DB_URL" not in env and env["KEEP_ME"] == "1"


def test_secrets_stay_out_of_every_output_and_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        cloud: FakeCloud, store: Store) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text(PLAYBOOK)
    a_vm, b_vm = f"fake://admin:{SECRET}@a1/libvirt", f"fake://admin:{SECRET}@b1/libvirt"
    a_ctr, b_ctr = f"fake://a1/docker?token={TOKEN}", f"fake://b1/docker?token={TOKEN}"
    cloud.sites.update({uri: FakeSite() for uri in (a_vm, b_vm, a_ctr, b_ctr)})
    cloud.sites[a_vm].workloads["db"] = FakeWorkload(WorkloadKind.VM, counter=1)
    cloud.sites[a_ctr].workloads[EVIL] = FakeWorkload(WorkloadKind.CONTAINER, counter=1, labels={"tier": "web"})
    cloud.sites[b_ctr].reachable = False  # its errors name the endpoint
    said = []
    for args in (("failover", str(path), "--json"), ("failover", str(path)), ("history", "--json"),
                 ("history", "1"), ("report", "1", "--json"), ("report", "1", "--html", str(tmp_path / "r.html")),
                 ("status", str(path), "--json"), ("validate", str(path)), ("readiness", "check", str(path))):
        _, out, err = drorch(capsys, *args)
        said.append(out + err)
    said.append((tmp_path / "r.html").read_text())
    state = Path(store.engine.url.database or "").parent
    stored = b"".join(p.read_bytes() for p in state.iterdir())
    everything = "\n".join(said)
    assert "fake://admin:***@b1/libvirt" in everything or "token=***" in everything  # the endpoints are named
    for secret in (SECRET, TOKEN):
        assert secret not in everything
        assert secret.encode() not in stored
    html = said[-1]
    assert EVIL not in html and "&lt;script&gt;" in html
