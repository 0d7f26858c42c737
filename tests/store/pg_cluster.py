"""A throw-away PostgreSQL cluster for the tests: Debian's ``postgresql`` binaries, ``initdb`` in
a temp dir, ``pg_ctl`` on a random loopback port with its socket in that dir, removed afterwards.

PostgreSQL refuses to run as root, and the suite may run as root (CI, containers): then the
server runs as ``nobody`` through ``setpriv``, in a temp dir that user owns. The clients (the
tests) connect over TCP to 127.0.0.1 with a password, as layerbot users would.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SERVER_USER = "nobody"  # the unprivileged account the server runs as when the suite runs as root
SUPERUSER = "layerbot"


class PostgresUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class PgCluster:
    host: str
    port: int
    user: str
    password: str
    data_dir: Path
    bin_dir: Path
    options: str
    log: Path

    def url(self, dbname: str = "postgres") -> str:
        """A postgresql:// URL without the password (it comes from PGPASSWORD or .pgpass)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def stop(self) -> None:
        """Stop the server (an outage: clients' connections are cut)."""
        _run([*_as_server_user(), str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast",
              "-w", "stop"], "pg_ctl stop")

    def start(self) -> None:
        """Start it again on the same port."""
        _run([*_as_server_user(), str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l",
              str(self.log), "-o", self.options, "-w", "-t", "60", "start"], "pg_ctl start")


def postgres_bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        raise PostgresUnavailable("no /usr/lib/postgresql/*/bin/initdb: install Debian's postgresql "
                                  "(scripts/setup.sh does)")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    return ["setpriv", f"--reuid={SERVER_USER}", f"--regid={pwd.getpwnam(SERVER_USER).pw_gid}",
            "--clear-groups", "--"]


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise PostgresUnavailable(f"{what} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


@contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    bin_dir = postgres_bin_dir()
    base = Path(tempfile.mkdtemp(prefix="layerbot-pg-"))
    data, log = base / "data", base / "server.log"
    password = secrets.token_urlsafe(16)
    (base / "pw").write_text(password)
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SERVER_USER)
        os.chown(base, entry.pw_uid, entry.pw_gid)
        os.chown(base / "pw", entry.pw_uid, entry.pw_gid)
    sudo = _as_server_user()
    started = False
    try:
        _run([*sudo, str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=scram-sha-256",
              f"--pwfile={base / 'pw'}", "--encoding=UTF8", "--no-sync"], "initdb")
        (base / "pw").unlink()
        for _ in range(5):  # the port may be taken between the probe and the start
            port = _free_port()
            options = (f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
                       " -c max_connections=100")
            log.unlink(missing_ok=True)
            cmd = [*sudo, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                   "-w", "-t", "60", "start"]
            if subprocess.run(cmd, capture_output=True, timeout=120, check=False).returncode == 0:
                started = True
                break
        if not started:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise PostgresUnavailable(f"pg_ctl start failed: {tail}")
        yield PgCluster("127.0.0.1", port, SUPERUSER, password, data, bin_dir, options, log)
    finally:
        if started:
            subprocess.run([*sudo, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                            "stop"], capture_output=True, timeout=120, check=False)
        shutil.rmtree(base, ignore_errors=True)
