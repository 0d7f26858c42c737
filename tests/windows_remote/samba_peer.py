"""A real Samba server on 127.0.0.1 for the SMB copy: Debian's ``smbd`` as an ordinary process.

Runs as whoever runs the tests (root or not): a throw-away smb.conf in a temporary folder
(every state, lock, cache, pid and private dir there), a random high port, loopback only,
SMB2/3 only, no NetBIOS, printing, winbind or AD services. The share's user is the Unix user
running the tests (smbd maps the SMB user to a Unix account), added with ``pdbedit`` into a
tdbsam passdb in the folder (``smbpasswd -a`` needs root; pdbedit does not).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SHARE = "layerbot"
SMB_USER_ENV = "LAYERBOT_TEST_SMB_USER"
SMB_PASSWORD_ENV = "LAYERBOT_TEST_SMB_PASSWORD"
PASSWORD = "Samba-test-pw-1"  # a throw-away account of a throw-away server


class SambaUnavailable(RuntimeError):
    pass


@dataclass
class SambaPeer:
    process: subprocess.Popen[bytes]
    port: int
    root: Path
    share_dir: Path
    user: str
    password: str = PASSWORD

    @property
    def unc(self) -> str:
        return f"\\\\127.0.0.1\\{SHARE}"

    def files(self) -> list[str]:
        return sorted(p.name for p in self.share_dir.iterdir())

    def connections(self) -> list[int]:
        """The pids of smbd's children (one per client connection, plus helpers)."""
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def cut_copy_after_first_chunk(self, copier: Any) -> list[int]:
        """Make ``copier`` (an SmbCopier) lose its connection after its first chunk: the
        server side of the connections opened since is killed on the copy's own thread, before
        the next chunk is sent (deterministic, whatever the speed). The bytes at the cut."""
        before = set(self.connections())
        real = copier._copy_sync
        cut: list[int] = []

        def copy(source: Path, unc: str, stop: Any, report: Callable[[int], None]) -> int:
            def report_then_cut(done: int) -> None:
                report(done)
                if not cut:
                    cut.append(done)
                    for pid in set(self.connections()) - before:
                        with contextlib.suppress(ProcessLookupError):  # a helper that just ended
                            os.kill(pid, signal.SIGKILL)

            return int(real(source, unc, stop, report_then_cut))

        copier._copy_sync = copy
        return cut

    def log(self) -> str:
        path = self.root / "smbd.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        with contextlib.suppress(ProcessLookupError):  # children smbd left (it was killed)
            os.killpg(self.process.pid, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(root: Path, port: int) -> str:
    dirs = {name: root / name for name in ("private", "lock", "state", "cache", "pid", "ncalrpc")}
    for path in dirs.values():
        path.mkdir(exist_ok=True)
    return f"""[global]
  server role = standalone server
  smb ports = {port}
  bind interfaces only = yes
  interfaces = 127.0.0.1
  server min protocol = SMB2_02
  server services = smb
  disable netbios = yes
  private dir = {dirs['private']}
  lock directory = {dirs['lock']}
  state directory = {dirs['state']}
  cache directory = {dirs['cache']}
  pid directory = {dirs['pid']}
  ncalrpc dir = {dirs['ncalrpc']}
  log file = {root}/smbd.log
  passdb backend = tdbsam:{dirs['private']}/passdb.tdb
  map to guest = never
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  usershare path =
[{SHARE}]
  path = {root}/share
  read only = no
  guest ok = no
"""


def start_samba(root: Path, wait: float = 20.0) -> SambaPeer:
    smbd, pdbedit = shutil.which("smbd", path="/usr/sbin:/usr/bin"), shutil.which(
        "pdbedit", path="/usr/sbin:/usr/bin")
    if smbd is None or pdbedit is None:
        raise SambaUnavailable("smbd/pdbedit not found: install Debian's samba (scripts/setup.sh)")
    root.mkdir(parents=True, exist_ok=True)
    (root / "share").mkdir(exist_ok=True)
    user = pwd.getpwuid(os.getuid()).pw_name
    port = _free_port()
    conf = root / "smb.conf"
    conf.write_text(_config(root, port))
    added = subprocess.run([pdbedit, "-s", str(conf), "-a", "-t", "-u", user],
                           input=f"{PASSWORD}\n{PASSWORD}\n", capture_output=True, text=True)
    if added.returncode != 0:
        raise SambaUnavailable(f"pdbedit could not add {user}: {added.stderr.strip()}")
    out = open(root / "smbd.out", "wb")  # noqa: SIM115  # smbd writes to it until stopped
    process = subprocess.Popen(
        [smbd, "--foreground", "--no-process-group", f"--configfile={conf}", "--debug-stdout",
         "--debuglevel=1"], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        # smbd ends by signalling its whole process group: its own, not pytest's
        start_new_session=True)
    out.close()
    peer = SambaPeer(process, port, root, root / "share", user)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SambaUnavailable(f"smbd exited with {process.returncode}: {peer.log()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return peer
        except OSError:
            time.sleep(0.1)
    peer.stop()
    raise SambaUnavailable(f"smbd did not listen on 127.0.0.1:{port} within {wait:g} s: {peer.log()[-2000:]}")


@pytest.fixture(scope="session")
def samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaPeer]:
    """One smbd for the test session."""
    try:
        peer = start_samba(tmp_path_factory.mktemp("samba"))
    except SambaUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield peer
    peer.stop()


@pytest.fixture
def smb_env(samba: SambaPeer, monkeypatch: pytest.MonkeyPatch) -> SambaPeer:
    """The share's credentials in the environment, and an empty share."""
    monkeypatch.setenv(SMB_USER_ENV, samba.user)
    monkeypatch.setenv(SMB_PASSWORD_ENV, samba.password)
    for name in samba.files():
        (samba.share_dir / name).unlink()
    return samba
