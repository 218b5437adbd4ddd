"""The lab's witness cluster: three etcd members on loopback, one beside each site and one at a third place,
serving their clients and each other over TLS with certificates of the lab's CA, and asking clients for
theirs. Debian's etcd-server, unpacked under the lab folder by setup.sh (its service never installed); each
member started and stopped by its recorded pid."""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from integration import lab_partition, lab_pki
from integration.lab_base import LAB, PKI, log, read_pid, stop_pid, wait_for

ETCD = LAB / "etcd" / "usr" / "bin" / "etcd"
CERT, KEY = "etcd-cert.pem", "etcd-key.pem"
PIDFILE = "etcd.pid"


@dataclass(frozen=True)
class Member:
    place: str  # a site's name, or the witness's
    address: str
    client_port: int
    peer_port: int

    def url(self, peer: bool = False) -> str:
        """Where its clients (or, with `peer`, the other members) reach it."""
        return f"https://{self.address}:{self.peer_port if peer else self.client_port}"

    @property
    def root(self) -> Path:
        """Its data, log and pid file."""
        return LAB / "etcd" / "members" / self.place


MEMBERS = {m.place: m for m in (Member("a", "127.0.0.1", 23791, 23801), Member("b", "127.0.0.2", 23792, 23802),
                                Member("witness", "127.0.0.3", 23793, 23803))}


def certificate() -> None:
    """The members' certificate, for each of their addresses, signed by the lab's CA (made once)."""
    lab_pki.ensure(PKI)
    if (PKI / CERT).exists():
        return
    sans = ",".join(f"IP:{m.address}" for m in MEMBERS.values())
    lab_pki.signed(PKI, CERT, KEY, "etcd", f"subjectAltName={sans}\nkeyUsage=critical,digitalSignature,"
                   "keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n")


def start(place: str) -> None:
    """One member, with the cluster it was first started in (its data folder keeps it from then on), run as its
    place's own uid (lab_partition) with its own copy of the members' certificate."""
    m = MEMBERS[place]
    if read_pid(m.root / PIDFILE):
        return
    certificate()
    tls_dir = m.root / "tls"
    tls_dir.mkdir(parents=True, exist_ok=True)
    for name in (CERT, KEY, lab_pki.CA):
        shutil.copy(PKI / name, tls_dir / name)
    uid = lab_partition.PLACES[place].uid
    for path in (m.root, *m.root.rglob("*")):
        os.chown(path, uid, lab_partition.GROUP)
    tls = [f"--{side}{what}={tls_dir / name}" for side in ("", "peer-")
           for what, name in (("cert-file", CERT), ("key-file", KEY), ("trusted-ca-file", lab_pki.CA))]
    cluster = ",".join(f"{o.place}={o.url(peer=True)}" for o in MEMBERS.values())
    argv = [str(ETCD), "--name", place, "--data-dir", str(m.root / "data"),
            "--listen-client-urls", m.url(), "--advertise-client-urls", m.url(),
            "--listen-peer-urls", m.url(peer=True), "--initial-advertise-peer-urls", m.url(peer=True),
            "--initial-cluster", cluster, "--initial-cluster-state", "new", "--initial-cluster-token", "drorch-lab",
            "--client-cert-auth", "--peer-client-cert-auth", "--pre-vote", *tls]
    # Pre-vote: a member cut from the leader does not unseat it with elections it cannot win.
    log(f"starting etcd member {place} on {m.url()}")
    with (m.root / "etcd.log").open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                **lab_partition.as_place(place))
    (m.root / PIDFILE).write_text(str(proc.pid))


def stop(place: str) -> None:
    stop_pid(MEMBERS[place].root / PIDFILE, f"etcd member {place}")


def up() -> None:
    """All three members, and a leader among them."""
    for place in MEMBERS:
        start(place)
    wait_for(lambda: healthy(MEMBERS["witness"]), "the etcd cluster to elect a leader", 60)


def down() -> None:
    for place in MEMBERS:
        stop(place)


def _post(m: Member, path: str, body: dict[str, str]) -> bool:
    """A request of the v3 gateway, with the lab's client certificate; whether it was answered."""
    tls = ssl.create_default_context(cafile=str(PKI / lab_pki.CA))
    tls.load_cert_chain(PKI / lab_pki.CLIENT, PKI / lab_pki.CLIENT_KEY)
    ask = urllib.request.Request(f"{m.url()}/v3/{path}", data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(ask, timeout=2, context=tls) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def healthy(m: Member) -> bool:
    """The member answers a linearizable read: a majority, leader included, is behind it."""
    return _post(m, "kv/range", {"key": _b64("/drorch")})


def client_settings() -> dict[str, object]:
    """A playbook's auto_failover.etcd for the lab's cluster: every member with its place, and the lab's client
    certificate."""
    return {"endpoints": [{"url": m.url(), "site": m.place} for m in MEMBERS.values()],
            "ca": str(PKI / lab_pki.CA), "cert": str(PKI / lab_pki.CLIENT), "key": str(PKI / lab_pki.CLIENT_KEY)}


def clear() -> None:
    """drorch's keys gone from the cluster, for a test that starts from none."""
    if not _post(MEMBERS["witness"], "kv/deleterange", {"key": _b64("/drorch/"), "range_end": _b64("/drorch0")}):
        raise SystemExit("[lab] the etcd cluster did not answer a delete of drorch's keys")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
