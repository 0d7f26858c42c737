"""The process that runs one QEMU VM and records its life:
``python -m adapters.qemu.monitor [--background] VM_DIR``.

Started (detached) by ``layerbot vm start``. It launches QEMU daemonized and paused (``-S``),
connects to its QMP socket, resumes the guest, then writes each QMP event to events.jsonl
and the VM's state to state.json until QEMU exits:

- ``running`` once the guest runs;
- ``off`` when the guest powered itself off (QMP ``SHUTDOWN`` with ``guest: true`` and
  reason ``guest-shutdown``): the first-boot runner finished;
- ``stopped`` when QEMU ended any other way (the guest restarted under ``-no-reboot``,
  the host killed QEMU, a crash), with the reason;
- ``failed`` when QEMU could not start (its error output is kept).

Starting paused means no guest event can happen before the monitor listens.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from adapters.base import error_words
from adapters.qemu import vmfiles

_CONNECT_SECONDS = 30.0
#: How long a kernel-booted guest under KVM may stay silent before TCG is tried instead.
_KVM_PROBE_SECONDS = 20.0
#: query-status results after a STOP that mean the guest will never continue by itself.
_DEAD_STATUSES = {"internal-error", "guest-panicked", "io-error"}


class QmpClient:
    """A blocking QMP client over a unix socket (one JSON object per line)."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.reader = self.sock.makefile("rb")
        self.events: list[dict[str, Any]] = []
        greeting = self._read()
        if greeting is None or "QMP" not in greeting:
            raise OSError("no QMP greeting")
        self.execute("qmp_capabilities")

    def _read(self) -> dict[str, Any] | None:
        line = self.reader.readline()
        if not line:
            return None
        message: dict[str, Any] = json.loads(line)
        return message

    def execute(self, command: str) -> dict[str, Any]:
        self.sock.sendall(json.dumps({"execute": command}).encode() + b"\n")
        while True:
            reply = self._read()
            if reply is None:
                raise OSError(f"QMP closed while waiting for {command}")
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise OSError(f"QMP {command}: {reply['error'].get('desc', reply['error'])}")
            return reply

    def next_event(self) -> dict[str, Any] | None:
        if self.events:
            return self.events.pop(0)
        while (message := self._read()) is not None:
            if "event" in message:
                return message
        return None

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def _connect(deadline: float) -> QmpClient:
    while True:
        try:
            return QmpClient(vmfiles.QMP_SOCKET)
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _final_state(shutdown: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    if shutdown is None:
        return vmfiles.STOPPED, {"reason": "QEMU exited without a shutdown event (killed or crashed)"}
    data = shutdown.get("data", {})
    reason = str(data.get("reason", "unknown"))
    if data.get("guest") and reason == "guest-shutdown":
        return vmfiles.OFF, {"reason": reason}
    return vmfiles.STOPPED, {"reason": reason}


def _launch(vm: vmfiles.VmDefinition, vm_dir: Path, accel: str) -> str | None:
    """Start QEMU daemonized and paused; None on success, else its error output."""
    argv = vmfiles.qemu_argv(vm, vm_dir, accel=accel, daemon=True)  # type: ignore[arg-type]
    try:
        proc = subprocess.run(argv, cwd=vm_dir, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, check=False)
    except FileNotFoundError:
        return f"{vm.qemu} is not installed; install it with: sudo apt-get install qemu-system-x86"
    if proc.returncode == 0:
        return None
    return (proc.stderr or proc.stdout).strip()[-800:] or f"exit code {proc.returncode}"


def _note(vm_dir: Path, event: str, **data: Any) -> None:
    with open(vm_dir / vmfiles.EVENTS, "a") as log:
        log.write(json.dumps({"event": event, "data": data, "at": time.time()}) + "\n")


def _start(vm: vmfiles.VmDefinition, vm_dir: Path, accel: str) -> tuple[QmpClient, str] | None:
    """Launch QEMU, connect to QMP and resume the guest; falls back from a KVM that fails to
    start to TCG when the definition says ``auto``. None (state ``failed``) when it cannot."""
    error = _launch(vm, vm_dir, accel)
    if error is not None and vm.accel == "auto" and accel == "kvm":
        _note(vm_dir, "KVM_FAILED", error=error)
        accel = "tcg"
        error = _launch(vm, vm_dir, accel)
    if error is not None:
        vmfiles.write_state(vm_dir, vmfiles.FAILED, error=error)
        return None
    try:
        qmp = _connect(time.monotonic() + _CONNECT_SECONDS)
        qmp.execute("cont")
    except OSError as exc:
        vmfiles.kill_qemu(vm_dir)
        vmfiles.write_state(vm_dir, vmfiles.FAILED, error=f"QMP: {exc}")
        return None
    return qmp, accel


def _kernel_started(vm_dir: Path, seconds: float) -> bool:
    """True once the kernel's banner is on the serial console (console=ttyS0 prints it within
    a second or two). Output of the real-mode setup code alone ("Probing EDD") is not enough:
    a stalled KVM guest gets that far."""
    deadline = time.monotonic() + seconds
    log = vm_dir / vmfiles.SERIAL_LOG
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError), open(log, "rb") as fh:
            if b"Linux version" in fh.read(1 << 20):
                return True
        time.sleep(0.2)
    return False


def _stop(qmp: QmpClient, vm_dir: Path) -> None:
    with contextlib.suppress(OSError):
        qmp.execute("quit")
    qmp.close()
    vmfiles.kill_qemu(vm_dir)


def run(vm_dir: Path) -> int:
    vm = vmfiles.VmDefinition.load(vm_dir)
    started = _start(vm, vm_dir, vmfiles.resolve_accel(vm.accel))
    if started is None:
        return 1
    qmp, accel = started
    if accel == "kvm" and vm.accel == "auto" and vm.kernel \
            and not _kernel_started(vm_dir, _KVM_PROBE_SECONDS):
        # KVM started but the guest makes no progress (seen with nested virtualisation)
        _note(vm_dir, "KVM_STALLED", seconds=_KVM_PROBE_SECONDS)
        _stop(qmp, vm_dir)
        (vm_dir / vmfiles.SERIAL_LOG).unlink(missing_ok=True)
        started = _start(vm, vm_dir, "tcg")
        if started is None:
            return 1
        qmp, accel = started
    pid = vmfiles.qemu_pid(vm_dir)
    started_at = time.time()
    vmfiles.write_state(vm_dir, vmfiles.RUNNING, pid=pid, accel=accel, started_at=started_at,
                        host=socket.gethostname())
    shutdown: dict[str, Any] | None = None
    broken: str | None = None
    with open(vm_dir / vmfiles.EVENTS, "a") as log:
        while (event := qmp.next_event()) is not None:
            log.write(json.dumps(event) + "\n")
            log.flush()
            if event.get("event") == "SHUTDOWN":
                shutdown = event
            elif event.get("event") == "STOP" and shutdown is None:
                status = _status(qmp)
                if status in _DEAD_STATUSES:
                    broken = status
                    _stop(qmp, vm_dir)
                    break
    qmp.close()
    if broken is not None:
        state, details = vmfiles.STOPPED, {"reason": f"the VM stopped with {broken}"}
    else:
        state, details = _final_state(shutdown)
    vmfiles.write_state(vm_dir, state, pid=pid, accel=accel, started_at=started_at,
                        stopped_at=time.time(), host=socket.gethostname(), **details)
    return 0


def _status(qmp: QmpClient) -> str:
    try:
        return str(qmp.execute("query-status").get("return", {}).get("status", ""))
    except OSError:
        return ""


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--background"]:
        args = args[1:]
        if os.fork() != 0:
            os._exit(0)  # the caller waits for this one; the child carries on detached
        os.setsid()
    vm_dir = Path(args[0]).resolve()
    os.chdir(vm_dir)
    try:
        sys.exit(run(vm_dir))
    except Exception as exc:
        vmfiles.write_state(vm_dir, vmfiles.FAILED, error=error_words(exc))
        raise


if __name__ == "__main__":
    main()
