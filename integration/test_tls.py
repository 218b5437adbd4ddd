"""Site b of the lab over TLS: its endpoints refuse a client without the lab's certificate, and the lab
playbook (libvirt over qemu+tls, Docker over TCP with a client certificate, migration: {tls: true})
moves every workload there and back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from drorch.drivers.base import Endpoint
from drorch.drivers.containers.docker_engine import DockerSite
from drorch.drivers.libvirt.vm_driver import LibvirtDriver
from drorch.errors import SiteUnreachable
from integration import lab_base, lab_pki, labctl
from integration.support.lab_views import Drorch

B = labctl.SITES["b"]
LAB_PLAYBOOK = Path(__file__).resolve().parents[1] / "playbooks" / "lab.yaml"
CLIENT = (str(labctl.PKI / lab_pki.CA), str(labctl.PKI / lab_pki.CLIENT), str(labctl.PKI / lab_pki.CLIENT_KEY))


def test_docker_over_tls_needs_the_client_certificate() -> None:
    good = DockerSite(Endpoint("b", B.docker_tls_url, tls=CLIENT))
    try:
        assert good.info["ExperimentalBuild"]  # the daemon answered through the TLS endpoint
    finally:
        good.close()
    plain = DockerSite(Endpoint("b", B.docker_tls_url))
    try:
        with pytest.raises(SiteUnreachable, match=rf"site b: Docker at {B.docker_tls_url}"):
            plain.inspect(labctl.CHECKPOINT_CONTAINER)
    finally:
        plain.close()
    stranger = DockerSite(Endpoint("b", B.docker_tls_url, tls=(CLIENT[0], CLIENT[0], CLIENT[2])))
    try:
        with pytest.raises(SiteUnreachable):  # a certificate that is not the key's: no handshake
            stranger.inspect(labctl.CHECKPOINT_CONTAINER)
    finally:
        stranger.close()


def test_a_missing_certificate_file_is_named() -> None:
    with pytest.raises(SiteUnreachable, match=r"TLS file /nonexistent/client.pem cannot be read"):
        DockerSite(Endpoint("b", B.docker_tls_url, tls=(CLIENT[0], "/nonexistent/client.pem", CLIENT[2])))


def test_libvirt_over_tls_needs_the_client_certificate(tmp_path: Path) -> None:
    driver = LibvirtDriver()
    try:
        assert driver.host_facts(Endpoint("b", B.libvirt_tls_uri)).memory_mib
        empty = B.libvirt_tls_uri.replace(f"pkipath={labctl.PKI}", f"pkipath={tmp_path}")
        with pytest.raises(SiteUnreachable, match=r"site b: libvirt at qemu\+tls://127\.0\.0\.2"):
            driver.host_facts(Endpoint("b", empty))
    finally:
        driver.close()


@pytest.mark.usefixtures("fresh_lab")
def test_the_lab_playbook_moves_everything_over_tls(run_drorch: Drorch, tmp_path: Path) -> None:
    pb = yaml.safe_load(LAB_PLAYBOOK.read_text())
    (b1,) = pb["sites"]["b"]["hosts"]
    assert b1["libvirt"].startswith("qemu+tls://") and b1["docker"].startswith("tcp://") and b1["tls"]
    assert next(w for w in pb["workloads"] if w["kind"] == "vm")["migration"]["tls"] is True
    for operation, site in (("failover", "b"), ("failback", "a")):
        res = run_drorch(operation, str(LAB_PLAYBOOK), "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        status = run_drorch("status", str(LAB_PLAYBOOK), "--json")
        assert status.returncode == 0, status.stderr
        assert {w["workload"]: w["running_on"] for w in json.loads(status.stdout)["workloads"]} == {
            lab_base.VM_NAME: [site], labctl.CHECKPOINT_CONTAINER: [site], labctl.REDEPLOY_CONTAINER: [site]}

