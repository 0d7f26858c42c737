"""vcsim (govmomi's vCenter simulator) built from Debian packages, and publish helpers."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from adapters.base import PublishContext

HERE = Path(__file__).parent
MAIN_GO = HERE / "vcsim" / "main.go"
GOPATH = Path("/usr/share/gocode")
GOVMOMI = GOPATH / "src/github.com/vmware/govmomi/simulator"
APT_HINT = "apt-get install golang-go golang-github-vmware-govmomi-dev"
USER, PASSWORD = "layerbot@vsphere.local", "s3cret-vc"
USER_ENV, PASSWORD_ENV = "LAYERBOT_TEST_VC_USER", "LAYERBOT_TEST_VC_PASSWORD"


def build_vcsim() -> Path:
    """Build (or reuse from ~/.cache/layerbot-test/vcsim/<hash>/) the vcsim binary."""
    go = shutil.which("go")
    if go is None or not GOVMOMI.is_dir():
        pytest.fail(f"vcsim needs Go and govmomi from Debian: {APT_HINT}", pytrace=False)
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
            pytest.fail(f"building vcsim failed ({APT_HINT}?):\n{out.stderr}", pytrace=False)
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
        pytest.fail("vcsim exited before printing its URL", pytrace=False)
    url = json.loads(line)["url"]
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    return VcSim(proc, url, parts.hostname, parts.port)


@pytest.fixture(scope="session")
def vcsim_binary() -> Path:
    return build_vcsim()


@pytest.fixture
def vcsim(vcsim_binary: Path) -> Iterator[VcSim]:
    sim = start_vcsim(vcsim_binary)
    yield sim
    sim.stop()


@pytest.fixture
def vc_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(USER_ENV, USER)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


def make_raw_disk(path: Path, size_mib: int = 64) -> Path:
    """A sparse GPT disk with a few MiB of random and repetitive data."""
    with open(path, "wb") as f:
        f.truncate(size_mib * 2**20)
    subprocess.run(["sgdisk", "-n1:2048:+16M", "-t1:ef00", "-n2:0:0", "-t2:8304", str(path)],
                   check=True, capture_output=True)
    with open(path, "r+b") as f:
        f.seek(3 * 2**20)
        f.write(os.urandom(3 * 2**20))
        f.seek(20 * 2**20)
        f.write(b"layerbot layered image " * 100_000)
        f.seek(size_mib * 2**20 - 4096)
        f.write(os.urandom(4096))
    return path


@pytest.fixture
def raw_disk(tmp_path: Path) -> Path:
    return make_raw_disk(tmp_path / "disk.img")


@dataclass
class Recorder:
    """What the runner would see: progress notes and recorded resources."""

    progress: list[tuple[float, str]] = field(default_factory=list)
    resources: dict[str, Any] = field(default_factory=dict)
    hooks: list[Any] = field(default_factory=list)

    def context(self, artifact: Path, name: str, *, watch_timeout: float = 60.0
                ) -> PublishContext:
        async def progress(fraction: float, note: str) -> None:
            self.progress.append((fraction, note))
            for hook in list(self.hooks):
                await hook(fraction, note)

        async def record(values: dict[str, Any]) -> None:
            self.resources.update(values)

        ctx = PublishContext(
            task_id="t1", template="win10-office", image_name=name, artifact=artifact,
            artifact_format="raw", virtual_size=artifact.stat().st_size, progress=progress,
            record=record, resources=self.resources, watch_timeout=watch_timeout)
        return ctx


def connector(sim: VcSim, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "vsphere", "host": sim.host, "port": sim.port, "user_env": USER_ENV,
        "password_env": PASSWORD_ENV, "insecure": True, "datacenter": "DC0",
        "cluster": "DC0_C0", "datastore": "LocalDS_0", "network": "VM Network", "mode": "vm",
    }
    data.update(overrides)
    return data


def find_vms(sim: VcSim, name: str) -> list[Any]:
    """VMs (and templates) named ``name`` in vcsim."""
    from pyVmomi import vim

    si = sim.si()
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder,
                                                      [vim.VirtualMachine], True)
    try:
        return [vm for vm in view.view if vm.name == name]
    finally:
        view.DestroyView()


def run_task(sim: VcSim, task: Any) -> Any:
    from adapters.vsphere_vm import wait_task

    return wait_task(sim.si(), task, "test task")
