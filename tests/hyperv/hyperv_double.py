"""A Hyper-V host as the PowerShell runner sees it: records every script and its parameters
and answers with the JSON the cmdlets' objects give (shaped from shared/apis/hyperv/).

``New-VM`` checks that ``-VHDPath`` (a path on the host) is a file the SMB copy put on the
Samba share (``share_local_path`` maps to the share's folder), that the switch exists, that a
generation 2 VM boots from a .vhdx and that the memory is a multiple of 2 MB, as Hyper-V does;
``Set-VMFirmware`` knows Hyper-V's Secure Boot templates. ``DiskWritten`` is the file's mtime.
The create script's ``Set-VM -Notes`` can be made to fail (``fail_next["Set-VM"]``) or never
run (``cut_after_new_vm``: the connection drops after New-VM).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.windows_remote.powershell import Endpoint, PSError, PSResult

SECURE_BOOT_TEMPLATES = ("MicrosoftWindows", "MicrosoftUEFICertificateAuthority", "OpenSourceShieldedVM")


class _CmdletError(LookupError):
    """A cmdlet's terminating error: (message, FullyQualifiedErrorId, category)."""


@dataclass
class Call:
    script: str
    parameters: dict[str, Any]

    @property
    def cmdlet(self) -> str:
        for name in ("New-VM", "Set-VMProcessor", "Set-VMFirmware", "Remove-VM", "Get-VM"):
            if name in self.script:
                return name
        return "?"


@dataclass
class HyperVDouble:
    share_local_path: str
    share_dir: Path
    calls: list[Call] = field(default_factory=list)
    vms: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: cmdlet -> the error its next call fails with
    fail_next: dict[str, PSError] = field(default_factory=dict)
    logins: list[tuple[str, str]] = field(default_factory=list)
    #: called (on the runner's thread) before a cmdlet runs: a test's hook
    before: Callable[[Call], None] | None = None
    switches: set[str] = field(default_factory=lambda: {"LabSwitch"})
    #: New-VM makes the VM, then the connection drops (Set-VM -Notes never runs)
    cut_after_new_vm: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # the runner interface (adapters.windows_remote.powershell.Connect / PSConnection)
    def connect(self, endpoint: Endpoint, user: str, password: str, timeout: float) -> HyperVDouble:
        self.logins.append((user, password))
        return self

    def close(self) -> None:
        pass

    def run(self, script: str, parameters: Mapping[str, Any]) -> PSResult:
        call = Call(script, dict(parameters))
        if self.before is not None:
            self.before(call)
        with self._lock:
            self.calls.append(call)
            error = self.fail_next.pop(call.cmdlet, None)
            if error is not None:
                return PSResult([], [error], failed=True)
            try:
                out = getattr(self, "_" + call.cmdlet.replace("-", "_").lower())(call)
            except _CmdletError as exc:
                return PSResult([], [PSError(*exc.args)], True)
            except LookupError as exc:
                return PSResult([], [PSError(str(exc.args[0]), "InvalidParameter", "ObjectNotFound")], True)
        return PSResult([json.dumps(out, separators=(",", ":"))])

    # ------------------------------------------------------------ cmdlets
    def _host_file(self, local: str) -> Path:
        prefix = self.share_local_path + "\\"
        if not local.startswith(prefix):
            raise LookupError(f"The system cannot find the path specified: '{local}'")
        return self.share_dir / local[len(prefix):]

    def _vm(self, vm_id: str) -> dict[str, Any]:
        if vm_id not in self.vms:
            raise LookupError(f"Hyper-V was unable to find a virtual machine with id \"{vm_id}\".")
        return self.vms[vm_id]

    def disk_written(self, vm: dict[str, Any]) -> float | None:
        """Get-Item's LastWriteTimeUtc of the VM's disk, in Unix seconds."""
        try:
            return self._host_file(vm["VHDPath"]).stat().st_mtime
        except (LookupError, OSError):
            return None

    def _fields(self, vm: dict[str, Any]) -> dict[str, Any]:
        return {**{k: vm[k] for k in ("Name", "VMId", "State", "Generation", "Notes")},
                "DiskWritten": self.disk_written(vm)}

    def _new_vm(self, call: Call) -> list[dict[str, Any]]:
        p = call.parameters
        if not self._host_file(p["VHDPath"]).is_file():
            raise LookupError(f"Failed to open attachment '{p['VHDPath']}'. The system cannot find the file.")
        if p["SwitchName"] not in self.switches:
            raise _CmdletError(f"Hyper-V was unable to find a virtual switch with name "
                               f"\"{p['SwitchName']}\".",
                               "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.NewVM",
                               "InvalidArgument")
        if p["Generation"] == 2 and not p["VHDPath"].lower().endswith(".vhdx"):
            raise _CmdletError("Failed to add device 'Virtual Hard Disk'. The file is of type VHD: "
                               "generation 2 virtual machines require a VHDX.",
                               "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.NewVM",
                               "InvalidArgument")
        if p["MemoryStartupBytes"] % (2 << 20):
            raise _CmdletError("Invalid startup memory amount assigned: it must be a multiple of 2 MB.",
                               "OutOfBounds,Microsoft.HyperV.PowerShell.Commands.NewVM", "InvalidArgument")
        vm = {"Name": p["Name"], "VMId": str(uuid.uuid4()), "State": "Off",
              "Generation": p["Generation"], "Notes": "", "VHDPath": p["VHDPath"],
              "MemoryStartupBytes": p["MemoryStartupBytes"], "SwitchName": p["SwitchName"]}
        self.vms[vm["VMId"]] = vm
        if self.cut_after_new_vm:
            raise ConnectionResetError("the WinRM connection was reset")
        error = self.fail_next.pop("Set-VM", None)  # Set-VM -Notes, in the same script
        if error is not None:
            if "catch { Remove-VM $vm -Force; throw }" in call.script:
                del self.vms[vm["VMId"]]
            raise _CmdletError(error.message, error.error_id, error.category)
        vm["Notes"] = p["Notes"]
        return [self._fields(vm)]

    def _set_vmprocessor(self, call: Call) -> list[Any]:
        self._vm(call.parameters["VMId"])["Count"] = call.parameters["Count"]
        return []

    def _set_vmfirmware(self, call: Call) -> list[Any]:
        template = call.parameters.get("SecureBootTemplate", "off")
        if template != "off" and template not in SECURE_BOOT_TEMPLATES:
            raise _CmdletError(f"Cannot find the Secure Boot template '{template}'.",
                               "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.SetVMFirmware",
                               "InvalidArgument")
        self._vm(call.parameters["VMId"])["SecureBootTemplate"] = template
        return []

    def _get_vm(self, call: Call) -> list[dict[str, Any]]:
        p = call.parameters
        return [{"VMId": vm["VMId"], "State": vm["State"], "DiskWritten": self.disk_written(vm)}
                for vm in self.vms.values() if vm["Name"] in p["Names"] and vm["VMId"] in p["VMIds"]]

    def _remove_vm(self, call: Call) -> list[dict[str, Any]]:
        p = call.parameters
        found = ([self.vms[p["VMId"]]] if p["VMId"] in self.vms else []) if p["VMId"] else [
            vm for vm in self.vms.values() if vm["Name"] == p["Name"] and (
                vm["Notes"] == p["Notes"] or (
                    not vm["Notes"] and p.get("VHDPath") and vm["VHDPath"].lower() == p["VHDPath"].lower()))]
        for vm in found:
            del self.vms[vm["VMId"]]
        return [{"VMId": vm["VMId"]} for vm in found]

    # ------------------------------------------------------------ the guest
    def set_state(self, name: str, state: str) -> None:
        with self._lock:
            for vm in self.vms.values():
                if vm["Name"] == name:
                    vm["State"] = state

    def snapshot(self) -> list[dict[str, Any]]:
        """The host's VMs now (copies)."""
        with self._lock:
            return [dict(vm) for vm in self.vms.values()]

    def of(self, cmdlet: str) -> list[Call]:
        return [c for c in self.calls if c.cmdlet == cmdlet]
