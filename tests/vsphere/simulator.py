"""Build and run vcsim (govmomi's vCenter simulator) from Debian packages; no pytest here.

Used by the tests' fixtures and by bench/vsphere_publish.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import ssl
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).parent
MAIN_GO = HERE / "vcsim" / "main.go"
GOPATH = Path("/usr/share/gocode")
GOVMOMI = GOPATH / "src/github.com/vmware/govmomi/simulator"
APT_HINT = "apt-get install golang-go golang-github-vmware-govmomi-dev"
USER, PASSWORD = "layerbot@vsphere.local", "s3cret-vc"
USER_ENV, PASSWORD_ENV = "LAYERBOT_TEST_VC_USER", "LAYERBOT_TEST_VC_PASSWORD"


class VcSimUnavailable(RuntimeError):
    pass


def build_vcsim() -> Path:
    """Build (or reuse from ~/.cache/layerbot-test/vcsim/<hash>/) the vcsim binary."""
    go = shutil.which("go")
    if go is None or not GOVMOMI.is_dir():
        raise VcSimUnavailable(f"vcsim needs Go and govmomi from Debian: {APT_HINT}")
    digest = hashlib.sha256(MAIN_GO.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    binary = cache / "layerbot-test" / "vcsim" / digest / "vcsim"
    if binary.is_file():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(MAIN_GO, Path(tmp) / "main.go")
        env = {**os.environ, "GOPATH": str(GOPATH), "GO111MODULE": "off", "CGO_ENABLED": "0"}
        env.setdefault("GOCACHE", str(cache / "layerbot-test" / "go-build"))
        out = subprocess.run([go, "build", "-o", str(Path(tmp) / "vcsim"), "main.go"],
                             cwd=tmp, env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise VcSimUnavailable(f"building vcsim failed ({APT_HINT}?):\n{out.stderr}")
        os.replace(Path(tmp) / "vcsim", binary)
    return binary


@dataclass
class VcSim:
    process: subprocess.Popen[str]
    url: str
    host: str
    port: int
    _si: Any = None

    def si(self) -> Any:
        """A pyvmomi session of the test itself (to drive power on/off, inspect)."""
        if self._si is None:
            from pyVim.connect import SmartConnect

            self._si = SmartConnect(host=self.host, port=self.port, user=USER, pwd=PASSWORD,
                                    sslContext=ssl._create_unverified_context())
        return self._si

    def stop(self) -> None:
        if self._si is not None:
            self._si._stub.DropConnections()
        if self.process.stdin:
            self.process.stdin.close()
        if self.process.stdout:
            self.process.stdout.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_vcsim(binary: Path, *extra: str) -> VcSim:
    proc = subprocess.Popen([str(binary), "-l", "127.0.0.1:0", "-user", USER, "-pass", PASSWORD,
                             *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise VcSimUnavailable("vcsim exited before printing its URL")
    url = json.loads(line)["url"]
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    return VcSim(proc, url, parts.hostname, parts.port)


