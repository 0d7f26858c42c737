"""The PowerShell the Hyper-V adapter runs; every value is a parameter (adapters.windows_remote).

Windows PowerShell 5.1 (Hyper-V's) writes an enum as its number in JSON, so ``State`` and
``VMId`` are selected as strings. ``DiskWritten`` is the VM's first disk's LastWriteTimeUtc
(Unix seconds, the host's clock): a guest that ran and shut down between two watch rounds
leaves it later than at the publish.
"""

from __future__ import annotations

from adapters.windows_remote.powershell import Script, script

_DISK_WRITTEN = (
    "@{n='DiskWritten';e={$d = Get-VMHardDiskDrive -VM $_ | Select-Object -First 1; "
    "$f = if ($d.Path) { Get-Item -LiteralPath $d.Path -ErrorAction SilentlyContinue }; "
    "if ($f) { ([DateTimeOffset]$f.LastWriteTimeUtc).ToUnixTimeMilliseconds() / 1000 }}}")
_VM_FIELDS = ("Select-Object Name, @{n='VMId';e={[string]$_.VMId}}, @{n='State';e={[string]$_.State}}, "
              f"Generation, Notes, {_DISK_WRITTEN}")


def new_vm(name: str, generation: int, memory_bytes: int, vhd_path: str, switch: str,
           notes: str) -> Script:
    """New-VM, then the task's note; a VM whose note cannot be set is removed at once (a
    cleanup finds an untagged VM only by its disk)."""
    return script(
        f"creating VM {name}",
        "$vm = New-VM -Name $Name -Generation $Generation -MemoryStartupBytes $MemoryStartupBytes "
        "-VHDPath $VHDPath -SwitchName $SwitchName\n"
        "try { Set-VM -VM $vm -Notes $Notes } catch { Remove-VM $vm -Force; throw }\n"
        f"$vm | {_VM_FIELDS}",
        Name=name, Generation=generation, MemoryStartupBytes=memory_bytes, VHDPath=vhd_path,
        SwitchName=switch, Notes=notes)


def set_processor(vm_id: str, cpus: int) -> Script:
    return script(f"setting {cpus} CPUs", "Set-VMProcessor -VM (Get-VM -Id $VMId) -Count $Count",
                  VMId=vm_id, Count=cpus)


def set_secure_boot(vm_id: str, template: str) -> Script:
    if template.lower() == "off":
        return script("turning Secure Boot off",
                      "Set-VMFirmware -VM (Get-VM -Id $VMId) -EnableSecureBoot Off", VMId=vm_id)
    return script(f"setting the Secure Boot template {template!r}",
                  "Set-VMFirmware -VM (Get-VM -Id $VMId) -EnableSecureBoot On "
                  "-SecureBootTemplate $SecureBootTemplate", VMId=vm_id, SecureBootTemplate=template)


def vm_states(names: list[str], vm_ids: list[str]) -> Script:
    """One query for every watched VM of a host: those of ``names`` whose VMId is watched."""
    return script(
        f"reading the state of {len(vm_ids)} VM(s)",
        "Get-VM -Name $Names -ErrorAction SilentlyContinue | "
        "Where-Object { $VMIds -contains [string]$_.VMId } | "
        "Select-Object @{n='VMId';e={[string]$_.VMId}}, @{n='State';e={[string]$_.State}}, "
        f"{_DISK_WRITTEN}",
        Names=names, VMIds=vm_ids)


def remove_vm(name: str, vm_id: str | None, notes: str, vhd_path: str) -> Script:
    """Remove the VM (turned off first); by VMId, else by name and the task's note, or with
    no note (New-VM ran, Set-VM -Notes did not) by name and this task's disk."""
    find = ("Get-VM -Id $VMId -ErrorAction SilentlyContinue" if vm_id else
            "Get-VM -Name $Name -ErrorAction SilentlyContinue | Where-Object { $_.Notes -eq $Notes -or "
            "(-not $_.Notes -and $VHDPath -and "
            "@(Get-VMHardDiskDrive -VM $_ | Where-Object { $_.Path -eq $VHDPath }).Count -gt 0) }")
    return script(
        f"removing VM {name}",
        f"$found = @({find})\n"
        "foreach ($vm in $found) {\n"
        "  if ($vm.State -ne 'Off') { Stop-VM -VM $vm -TurnOff -Force }\n"
        "  Remove-VM -VM $vm -Force\n"
        "}\n"
        "$found | Select-Object @{n='VMId';e={[string]$_.VMId}}",
        Name=name, VMId=vm_id or "", Notes=notes, VHDPath=vhd_path)
