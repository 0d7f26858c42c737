"""A QEMU VM as files in one directory, so any process can start, watch or remove it.

::

    <path>/<image-name>/
        vm.json       the definition: name, task, disk, memory, cpus, accel, kernel boot
        start.sh      a launcher for running it by hand (foreground, serial on the terminal)
        disk.qcow2    the published disk
        vmlinuz, initrd.img   direct kernel boot (from the disk's /boot)
        qemu.pid      written by QEMU once started (-daemonize -pidfile)
        qmp.sock      QMP socket (relative: unix socket paths are limited to 108 bytes)
        serial.log    the guest's serial console
        state.json    written by the monitor (adapters.qemu.monitor): starting, running, off...
        events.jsonl  every QMP event the monitor saw

``layerbot vm start`` spawns the monitor, which launches QEMU paused, connects to its QMP
socket, resumes the guest and records what happens until QEMU exits. The adapter's watcher
only reads these files, so it survives a restart of the runner and needs no child handle.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from adapters.base import PlatformError

DEFINITION = "vm.json"
LAUNCHER = "start.sh"
DISK = "disk.qcow2"
#: qemu-img convert's output until it is complete (then renamed to DISK)
PARTIAL_DISK = DISK + ".partial"
PIDFILE = "qemu.pid"
QMP_SOCKET = "qmp.sock"
SERIAL_LOG = "serial.log"
STATE = "state.json"
EVENTS = "events.jsonl"
MONITOR_LOG = "monitor.log"
#: Written first into a VM directory: the id of the task that created it (cleanup's proof).
OWNER = ".layerbot-task"

Accel = Literal["auto", "kvm", "tcg"]
#: The host CPU minus IA32_ARCH_CAPABILITIES: nested KVM hosts often refuse to set that MSR
#: ("failed to set MSR 0x10a"), which aborts QEMU.
KVM_CPU = "host,-arch-capabilities"

#: VM states recorded in state.json
STARTING, RUNNING, OFF, STOPPED, FAILED = "starting", "running", "off", "stopped", "failed"


@dataclass
class VmDefinition:
    name: str
    task_id: str
    memory_mb: int
    cpus: int
    accel: Accel
    qemu: str
    #: file names in the VM directory (direct kernel boot: layerbot's disk has no boot loader)
    kernel: str
    cmdline: str
    initrd: str | None = None
    disk: str = DISK
    created_at: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def load(cls, vm_dir: Path) -> VmDefinition:
        try:
            data = json.loads((vm_dir / DEFINITION).read_text())
        except FileNotFoundError:
            raise PlatformError(f"{vm_dir} holds no VM definition ({DEFINITION})") from None
        if not data.get("kernel"):
            raise PlatformError(
                f"{vm_dir}: this VM was published by an older layerbot for firmware boot, which "
                "cannot boot layerbot's disks (no boot loader); publish the template again")
        data.pop("disk_bus", None)  # written by older versions: always virtio now
        return cls(**data)


def kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def resolve_accel(accel: Accel) -> Literal["kvm", "tcg"]:
    if accel == "auto":
        return "kvm" if kvm_usable() else "tcg"
    return accel


def qemu_argv(vm: VmDefinition, vm_dir: Path, *, accel: Literal["kvm", "tcg"] | None,
              daemon: bool) -> list[str]:
    """The QEMU command line. Paths are absolute except the QMP socket (run in vm_dir).

    accel None gives ``-accel kvm -accel tcg`` (QEMU falls back to TCG by itself).
    """
    argv = [vm.qemu, "-name", vm.name, "-machine", "q35", "-m", str(vm.memory_mb),
            "-smp", str(vm.cpus)]
    if accel is None:
        argv += ["-accel", "kvm", "-accel", "tcg"]
    else:
        argv += ["-accel", accel, "-cpu", KVM_CPU if accel == "kvm" else "max"]
    argv += ["-drive", f"file={vm_dir / vm.disk},format=qcow2,cache=writeback,if=virtio",
             "-nic", "none", "-display", "none", "-no-reboot"]
    argv += ["-kernel", str(vm_dir / vm.kernel)]
    if vm.initrd:
        argv += ["-initrd", str(vm_dir / vm.initrd)]
    argv += ["-append", vm.cmdline]
    if daemon:
        argv += ["-daemonize", "-pidfile", str(vm_dir / PIDFILE), "-S",
                 "-qmp", f"unix:{QMP_SOCKET},server=on,wait=off",
                 "-serial", f"file:{vm_dir / SERIAL_LOG}", "-monitor", "none"]
    else:
        argv += ["-serial", "mon:stdio"]
    return argv


def launcher_script(vm: VmDefinition, vm_dir: Path) -> str:
    argv = qemu_argv(vm, vm_dir, accel=None, daemon=False)
    return (
        "#!/bin/sh\n"
        f"# {vm.name}: layerbot task {vm.task_id}. Runs the VM in the foreground, its serial\n"
        "# console on this terminal (Ctrl-A X quits). `layerbot vm start "
        f"{vm.task_id}` runs it in the\n# background and lets the task see the guest power off.\n"
        f"cd {shlex.quote(str(vm_dir))} || exit 1\n"
        "exec " + " \\\n  ".join(shlex.quote(a) for a in argv) + ' "$@"\n'
    )


def write_definition(vm: VmDefinition, vm_dir: Path) -> None:
    tmp = vm_dir / (DEFINITION + ".tmp")
    tmp.write_text(vm.to_json())
    os.replace(tmp, vm_dir / DEFINITION)
    launcher = vm_dir / LAUNCHER
    launcher.write_text(launcher_script(vm, vm_dir))
    launcher.chmod(0o755)


# ------------------------------------------------------------------ state files
def write_state(vm_dir: Path, state: str, **details: Any) -> None:
    data = {"state": state, "at": time.time(), **details}
    tmp = vm_dir / f".{STATE}.{os.getpid()}"
    tmp.write_text(json.dumps(data) + "\n")
    os.replace(tmp, vm_dir / STATE)


def read_state(vm_dir: Path) -> dict[str, Any] | None:
    """The monitor's last word, or None when the VM was never started."""
    try:
        data: dict[str, Any] = json.loads((vm_dir / STATE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data


def on_this_host(state: dict[str, Any]) -> bool:
    """Whether the VM of this state runs on this machine (VM directories may be shared)."""
    return state.get("host", socket.gethostname()) == socket.gethostname()


def qemu_pid(vm_dir: Path) -> int | None:
    """The pid of this VM's QEMU if it is running (the pid file may be stale)."""
    try:
        pid = int((vm_dir / PIDFILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    own_pidfile = os.fsencode(str(vm_dir / PIDFILE))
    return pid if own_pidfile in cmdline else None


def kill_qemu(vm_dir: Path, timeout: float = 10.0) -> bool:
    """Stop this VM's QEMU (SIGTERM, then SIGKILL). True when one was running."""
    pid = qemu_pid(vm_dir)
    if pid is None:
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if qemu_pid(vm_dir) is None:
                return True
            time.sleep(0.1)
    return True


def command_lines() -> Iterator[tuple[int, list[bytes]]]:
    """(pid, argv) of each process on this host whose command line can be read."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # ended meanwhile, or not ours to read
        yield int(proc.name), argv


def kill_disk_writers(vm_dir: Path, timeout: float = 10.0) -> list[int]:
    """Stop a qemu-img on this host still converting into ``vm_dir``: one whose runner was
    killed outlives it (nothing tells it), writing the whole disk again into a file that
    cleanup unlinks, its space held until it ends. Returns their pids."""
    partial = os.fsencode(str(vm_dir / PARTIAL_DISK))
    writers = []
    for pid, argv in command_lines():
        if partial in argv and os.path.basename(argv[0]) == b"qemu-img":
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                writers.append(pid)
    deadline = time.monotonic() + timeout
    while any(map(_alive, writers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return writers


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for its parent to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def create_owned_dir(vm_dir: Path, task_id: str) -> None:
    """Create ``vm_dir`` (never an existing one) and mark it as ``task_id``'s at once."""
    vm_dir.mkdir()
    fd = os.open(vm_dir / OWNER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, task_id.encode())
    finally:
        os.close(fd)


def owned_by(vm_dir: Path, task_id: str) -> bool:
    """True when ``task_id`` created ``vm_dir``: it holds that task's marker, or nothing yet
    (created, then the runner died before writing the marker, or before writing the marker's
    text: an empty marker alone)."""
    try:
        marker = (vm_dir / OWNER).read_text()
    except FileNotFoundError:
        return not any(vm_dir.iterdir())
    return marker == task_id or (marker == "" and [p.name for p in vm_dir.iterdir()] == [OWNER])


def remove_vm(vm_dir: Path, task_id: str, timeout: float = 10.0) -> bool:
    """Stop and delete a VM directory that ``task_id`` created. True when something was
    removed; a directory of someone else is left untouched."""
    if not vm_dir.exists() or not owned_by(vm_dir, task_id):
        return False
    if kill_qemu(vm_dir):
        _wait_for_monitor(vm_dir)
    kill_disk_writers(vm_dir, timeout)
    deadline = time.monotonic() + timeout
    while True:
        shutil.rmtree(vm_dir, ignore_errors=True)
        if not vm_dir.exists() or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # a file written while the tree was being removed
    if vm_dir.exists():
        raise PlatformError(f"could not remove the VM directory {vm_dir}")
    return True


def _wait_for_monitor(vm_dir: Path, timeout: float = 10.0) -> None:
    """Wait until the monitor of a just-killed QEMU wrote its final state: until then it may
    still write into the directory being removed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (read_state(vm_dir) or {}).get("state") not in (STARTING, RUNNING):
            return
        time.sleep(0.05)


# ------------------------------------------------------------------ start
def start(vm_dir: Path, *, timeout: float = 60.0) -> dict[str, Any]:
    """Start the VM in the background; return its state once the guest runs.

    Spawns ``python -m adapters.qemu.monitor VM_DIR`` in its own session; the monitor
    launches QEMU and records the VM's life in state.json.
    """
    vm = VmDefinition.load(vm_dir)
    if qemu_pid(vm_dir) is not None:
        raise PlatformError(f"VM {vm.name} is already running")
    state = read_state(vm_dir) or {}
    if state.get("state") in (STARTING, RUNNING) and not on_this_host(state):
        raise PlatformError(f"VM {vm.name} is running on {state.get('host')}; start it there")
    for name in (PIDFILE, QMP_SOCKET, STATE):
        (vm_dir / name).unlink(missing_ok=True)
    write_state(vm_dir, STARTING, host=socket.gethostname())
    package_root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    with open(vm_dir / MONITOR_LOG, "ab") as log:
        # the monitor forks itself into the background and its first process exits at once
        subprocess.run(
            [sys.executable, "-m", "adapters.qemu.monitor", "--background", str(vm_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=vm_dir,
            start_new_session=True, check=True, timeout=30,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(vm_dir) or {}
        if state.get("state") == FAILED:
            raise PlatformError(f"VM {vm.name} did not start: {state.get('error', 'unknown error')}")
        if state.get("state") in (RUNNING, OFF, STOPPED):
            return state
        time.sleep(0.1)
    raise PlatformError(f"VM {vm.name} did not start within {timeout:.0f} s; see {vm_dir / MONITOR_LOG}")
