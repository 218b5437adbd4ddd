"""Names from a real site printed as text: libvirt accepts a domain named with a carriage return, a tab and a
right-to-left override, which a terminal would act on (overwrite the line, reverse what follows). drorch's
text output shows them escaped, one row per workload; its JSON keeps the name exact."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import libvirt
import pytest

from integration import labctl
from integration.support.lab_views import LAB_PLAYBOOK, Drorch

NAME = "cr\rover\u202egnp\tx"
SHOWN = r"cr\rover\u202egnp\tx"
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029\u202a-\u202e]")


@pytest.fixture
def hostile_vm(lab: None) -> Iterator[str]:
    """A domain defined (never started) on site a under the hostile name; undefined afterwards."""
    conn = libvirt.open(labctl.SITES["a"].libvirt_uri)
    xml = ("<domain type='qemu'><name>cr&#13;over\u202egnp&#9;x</name><memory unit='MiB'>16</memory>"
           "<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>")
    dom = conn.defineXML(xml)
    try:
        assert dom.name() == NAME
        yield NAME
    finally:
        dom.undefine()
        conn.close()


@pytest.mark.usefixtures("hostile_vm")
def test_a_vm_name_with_control_characters_is_printed_escaped(run_drorch: Drorch) -> None:
    res = run_drorch("inventory", str(LAB_PLAYBOOK))
    assert res.returncode == 0, res.stderr
    assert not CONTROL.search(res.stdout + res.stderr), repr(res.stdout)
    rows = [ln for ln in res.stdout.splitlines() if SHOWN in ln]
    assert len(rows) == 1 and rows[0].split() == ["vm", SHOWN, "stopped", "1", "vCPU,", "16", "MiB"], rows
    doc = json.loads(run_drorch("inventory", str(LAB_PLAYBOOK), "--json").stdout)
    names = [w["name"] for h in doc["hosts"] for w in h["workloads"]]
    assert NAME in names  # JSON escapes it its own way and keeps it exact
