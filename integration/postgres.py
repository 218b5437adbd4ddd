"""A private PostgreSQL cluster for the tests of daemons that share one store.

The cluster lives under the lab's folder, listens on loopback only, trusts local connections, runs as
the `postgres` user (PostgreSQL refuses root), and is stopped by the pid this module started.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

import psycopg

from integration import labctl

BIN = Path("/usr/lib/postgresql/15/bin")
PORT = 55432
USER = "drorch"


class Cluster:
    def __init__(self, root: Path = labctl.LAB / "postgres") -> None:
        self.root = root
        self.data = root / "data"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{PORT}/{database}"

    def _connect(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """psycopg 3, the driver drorch's `postgresql://` URLs use too."""
        return psycopg.connect(host="127.0.0.1", port=PORT, user=USER, dbname=database, connect_timeout=2,
                               autocommit=True)

    def start(self) -> None:
        owner = pwd.getpwnam("postgres")
        self.root.mkdir(parents=True, exist_ok=True)
        os.chown(self.root, owner.pw_uid, owner.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            subprocess.run([str(BIN / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust", "--no-sync"],
                           user="postgres", check=True, capture_output=True, cwd=self.root)
        with (self.root / "postgres.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "postgres"), "-D", str(self.data), "-h", "127.0.0.1", "-p", str(PORT),
                 "-k", str(self.root), "-c", "fsync=off"],
                user="postgres", stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                self._connect().close()
                return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start: see {self.root / 'postgres.log'}") from None
                time.sleep(0.3)

    def new_database(self, name: str) -> str:
        """An empty database: each test gets its own store."""
        conn = self._connect()
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)  # fast shutdown
            self.proc.wait(timeout=60)
        self.proc = None
