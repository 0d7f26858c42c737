"""A stand-in for a Provisioning server's Citrix.PVS.SnapIn cmdlets behind PowerShell remoting:
it records each script block and its parameters and answers the JSON the adapter's scripts
print, from its own farm state (disk locators by store, site and name). It is the ``connect``
of :class:`~adapters.windows_remote.powershell.RemoteClients`. Import-PvsDisk needs the vhdx
in the store's folder, as the real cmdlet does; a cmdlet can be made to fail with a message."""

from __future__ import annotations

import json
import threading
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
        for name in ("Import-PvsDisk", "Set-PvsDisk", "Remove-PvsDiskLocator"):
            if f"{name} @at" in self.script:
                return name
        return "?"


class CmdletError(Exception):
    """A cmdlet's terminating error (the double turns it into an error record)."""


@dataclass
class PvsDouble:
    #: the folder the store's share serves (the Samba share's directory)
    store_dir: Path
    calls: list[Call] = field(default_factory=list)
    #: (store, site, name) -> the vDisk's properties
    disks: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    #: cmdlet -> the error message it fails with
    failing: dict[str, str] = field(default_factory=dict)

    #: who logged in: (host, user) per runspace opened
    logins: list[tuple[str, str]] = field(default_factory=list)
    #: the farm's state is one, its runspaces may be served from threads (the chaos runs)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def connect(self, endpoint: Endpoint, user: str, password: str, timeout: float) -> PvsDouble:
        self.logins.append((endpoint.host, user))
        return self

    def close(self) -> None:
        """The runspace is closed (the farm stays)."""

    def run(self, script: str, parameters: dict[str, Any]) -> PSResult:
        try:
            with self._lock:
                return PSResult([f"[{self.answer(script, parameters)}]"])
        except CmdletError as exc:
            return PSResult([], [PSError(str(exc), "PvsCmdletError", "InvalidOperation")], True)

    def locators(self) -> list[tuple[str, str, str]]:
        """The vDisks now: (store, site, name) each."""
        with self._lock:
            return list(self.disks)

    def answer(self, script: str, parameters: dict[str, Any]) -> str:
        """The script's object, as JSON."""
        call = Call(script, dict(parameters))
        self.calls.append(call)
        if call.cmdlet in self.failing:
            raise CmdletError(self.failing[call.cmdlet])
        p = parameters
        key = (p["Store"], p["Site"], p["Name"])
        if key not in self.disks and "Get-PvsDiskLocator @at -ErrorAction SilentlyContinue" in script:
            # the snap-in throws for a missing locator: a terminating error -ErrorAction cannot silence
            raise CmdletError("Get-PvsDiskLocator : Record not found.")
        if call.cmdlet == "Import-PvsDisk":
            if key not in self.disks:
                if not (self.store_dir / f"{p['Name']}.vhdx").is_file():
                    raise CmdletError(f"Import-PvsDisk : The vDisk file {p['Name']}.vhdx was not "
                                      "found in the store path")
                (self.store_dir / f"{p['Name']}.pvp").write_text("[Disk]\n")
                self.disks[key] = {"DiskLocatorId": f"guid-{len(self.disks)}", "WriteCacheType": 0,
                                   "LicenseMode": 0, "WriteCacheSize": 0}
            return json.dumps({"DiskLocatorId": self.disks[key]["DiskLocatorId"],
                               "DiskLocatorName": p["Name"], "StoreName": p["Store"],
                               "SiteName": p["Site"]})
        if call.cmdlet == "Set-PvsDisk":
            disk = self.disks[key]
            disk.update({k: p[k] for k in ("WriteCacheType", "LicenseMode", "WriteCacheSize")
                         if p.get(k) is not None})
            answer = json.dumps({k: disk[k] for k in ("WriteCacheType", "LicenseMode", "WriteCacheSize")})
            if "Set-PvsDisk @at @props | Out-Null" not in script:  # Set-PvsDisk writes the disk too
                answer = json.dumps({"Name": p["Name"], "Enabled": True}) + "," + answer
            return answer
        if call.cmdlet == "Remove-PvsDiskLocator":
            return json.dumps({"Removed": self.disks.pop(key, None) is not None})
        raise CmdletError(f"the double does not know this script: {script[:80]!r}")

    def of(self, cmdlet: str) -> list[dict[str, Any]]:
        """The parameters of each call of ``cmdlet``, in order."""
        return [c.parameters for c in self.calls if c.cmdlet == cmdlet]
