"""A Hyper-V host as the PowerShell runner sees it: records every script and its parameters
and answers with the JSON the cmdlets' objects give (shaped from shared/apis/hyperv/).

``New-VM`` checks that ``-VHDPath`` (a path on the host) is a file the SMB copy put on the
Samba share: ``share_local_path`` maps to the share's folder.
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
                out = getattr(self, "_" + call.cmdlet.replace("-", "_").lower())(call.parameters)
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

    @staticmethod
    def _fields(vm: dict[str, Any]) -> dict[str, Any]:
        return {k: vm[k] for k in ("Name", "VMId", "State", "Generation", "Notes")}

    def _new_vm(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        if not self._host_file(p["VHDPath"]).is_file():
            raise LookupError(f"Failed to open attachment '{p['VHDPath']}'. The system cannot find the file.")
        vm = {"Name": p["Name"], "VMId": str(uuid.uuid4()), "State": "Off",
              "Generation": p["Generation"], "Notes": "", "VHDPath": p["VHDPath"],
              "MemoryStartupBytes": p["MemoryStartupBytes"], "SwitchName": p["SwitchName"]}
        vm["Notes"] = p["Notes"]  # Set-VM -Notes in the same script
        self.vms[vm["VMId"]] = vm
        return [self._fields(vm)]

    def _set_vmprocessor(self, p: dict[str, Any]) -> list[Any]:
        self._vm(p["VMId"])["Count"] = p["Count"]
        return []

    def _set_vmfirmware(self, p: dict[str, Any]) -> list[Any]:
        self._vm(p["VMId"])["SecureBootTemplate"] = p.get("SecureBootTemplate", "off")
        return []

    def _get_vm(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"VMId": vm["VMId"], "State": vm["State"]} for vm in self.vms.values()
                if vm["Name"] in p["Names"] and vm["VMId"] in p["VMIds"]]

    def _remove_vm(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        found = ([self.vms[p["VMId"]]] if p["VMId"] in self.vms else []) if p["VMId"] else [
            vm for vm in self.vms.values() if vm["Name"] == p["Name"] and vm["Notes"] == p["Notes"]]
        for vm in found:
            del self.vms[vm["VMId"]]
        return [{"VMId": vm["VMId"]} for vm in found]

    # ------------------------------------------------------------ the guest
    def set_state(self, name: str, state: str) -> None:
        with self._lock:
            for vm in self.vms.values():
                if vm["Name"] == name:
                    vm["State"] = state

    def of(self, cmdlet: str) -> list[Call]:
        return [c for c in self.calls if c.cmdlet == cmdlet]
