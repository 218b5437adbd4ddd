"""The lab's certificates: one CA, a server certificate for both sites' addresses and a client certificate.

Site b serves libvirt (qemu+tls), Docker (tcp with --tlsverify) and QEMU migration streams over TLS
with them; drorch, and site a's libvirtd when it migrates to b, present the client certificate. Made
once by `lab up` with openssl, kept under the lab folder; the keys are readable by root only.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

ADDRESSES = ("127.0.0.1", "127.0.0.2")
CA, CA_KEY = "ca-cert.pem", "ca-key.pem"
SERVER, SERVER_KEY = "server-cert.pem", "server-key.pem"
CLIENT, CLIENT_KEY = "client-cert.pem", "client-key.pem"
# libvirt's client looks for these names in the folder given as ?pkipath=
LIBVIRT_CLIENT = {"cacert.pem": CA, "clientcert.pem": CLIENT, "clientkey.pem": CLIENT_KEY}


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def signed(pki: Path, name: str, key: str, cn: str, extensions: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        csr, ext = Path(tmp) / "req.csr", Path(tmp) / "ext.cnf"
        ext.write_text(extensions)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(pki / key), "-out", str(csr),
                 "-subj", f"/CN={cn}")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(pki / CA), "-CAkey", str(pki / CA_KEY),
                 "-CAcreateserial", "-out", str(pki / name), "-days", "3650", "-extfile", str(ext))


def ensure(pki: Path) -> Path:
    """The lab's PKI folder, made when missing; returns it."""
    if (pki / CLIENT).exists():
        return pki
    pki.mkdir(mode=0o700, parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(pki / CA_KEY), "-out", str(pki / CA),
             "-days", "3650", "-subj", "/CN=drorch lab CA")
    usage = "keyUsage=critical,digitalSignature,keyEncipherment\n"
    sans = ",".join(f"IP:{a}" for a in ADDRESSES)
    signed(pki, SERVER, SERVER_KEY, ADDRESSES[-1],
            f"subjectAltName={sans},DNS:localhost\n{usage}extendedKeyUsage=serverAuth,clientAuth\n")
    signed(pki, CLIENT, CLIENT_KEY, "drorch", f"{usage}extendedKeyUsage=clientAuth\n")
    for alias, name in LIBVIRT_CLIENT.items():
        (pki / alias).write_bytes((pki / name).read_bytes())
    for key in pki.glob("*key.pem"):
        key.chmod(0o600)
    return pki
