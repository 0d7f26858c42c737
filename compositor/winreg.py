"""Offline edits of a Windows registry hive with hivex's tools (Debian libhivex-bin).

hivexsh's ``setval`` replaces every value of a key, so the key's existing values are read
first with hivexget and written back with the new one. No root, no Windows.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

from .errors import ToolFailedError
from .tools import tool_path

RUN_ONCE = r"Microsoft\Windows\CurrentVersion\RunOnce"
_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_LINE = re.compile(rf"^{_QUOTED}=(.*)$")


class HiveError(ToolFailedError):
    """hivexsh or hivexget failed, or a value could not be carried over."""


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _string_hex(value_type: int, text: str) -> str:
    data = (text + "\0").encode("utf-16-le")
    return f"hex:{value_type}:" + ",".join(f"{b:02x}" for b in data)


def parse_values(listing: str) -> list[tuple[str, str]]:
    """hivexget's regedit-style lines -> (name, hivexsh setval value) pairs."""
    values = []
    for line in listing.splitlines():
        if not line.strip():
            continue
        match = _LINE.match(line)
        if match is None:
            raise HiveError("hivexget", 0, f"cannot parse the registry value line {line!r}")
        name, raw = _unescape(match.group(1)), match.group(2)
        if m := re.fullmatch(_QUOTED, raw):
            values.append((name, _string_hex(1, _unescape(m.group(1)))))
        elif m := re.fullmatch(rf"str\((\d+)\):{_QUOTED}", raw):
            values.append((name, _string_hex(int(m.group(1)), _unescape(m.group(2)))))
        elif m := re.fullmatch(r"dword:([0-9a-fA-F]{8})", raw):
            values.append((name, f"dword:0x{m.group(1)}"))
        elif m := re.fullmatch(r"hex\((\d+)\):([0-9a-fA-F,]*)", raw):
            values.append((name, f"hex:{m.group(1)}:{m.group(2)}"))
        elif m := re.fullmatch(r"hex:([0-9a-fA-F,]*)", raw):
            values.append((name, f"hex:3:{m.group(1)}"))
        else:
            raise HiveError("hivexget", 0, f"cannot carry over the registry value {line!r}")
    return values


def _run(argv: list[str], ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                          env={"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"})
    if proc.returncode not in ok:
        raise HiveError(Path(argv[0]).name, proc.returncode, proc.stderr or proc.stdout)
    return proc


def set_value(hive: bytes, key: str, name: str, value: str) -> bytes:
    """Return hive with ``key`` (backslash path below the hive root, created if missing)
    holding the REG_SZ ``name`` = ``value``; the key's other values are kept."""
    hivexget, hivexsh = tool_path("hivexget"), tool_path("hivexsh")
    parts = [p for p in key.split("\\") if p]
    with tempfile.TemporaryDirectory(prefix="layerbot-hive-") as tmp:
        path = Path(tmp) / "hive"
        path.write_bytes(hive)
        existing = 0
        for depth in range(1, len(parts) + 1):
            probe = _run([hivexget, str(path), "\\" + "\\".join(parts[:depth])], ok=(0, 1))
            if probe.returncode != 0:
                break
            existing = depth
        values = []
        if existing == len(parts):
            listing = _run([hivexget, str(path), "\\" + "\\".join(parts)]).stdout
            values = [(n, v) for n, v in parse_values(listing) if n.lower() != name.lower()]
        values.append((name, _string_hex(1, value)))
        script = ["cd \\" + "\\".join(parts[:existing])] if existing else []
        for part in parts[existing:]:
            script += [f"add {part}", f"cd {part}"]
        script.append(f"setval {len(values)}")
        for value_name, encoded in values:
            script += [value_name, encoded]
        script.append("commit")
        script_file = Path(tmp) / "edit.hsh"
        script_file.write_text("\n".join(script) + "\n")
        _run([hivexsh, "-w", "-f", str(script_file), str(path)])
        return path.read_bytes()


def get_value(hive: bytes, key: str, name: str) -> str | None:
    """A value as hivexget prints it (strings decoded), or None when absent."""
    with tempfile.TemporaryDirectory(prefix="layerbot-hive-") as tmp:
        path = Path(tmp) / "hive"
        path.write_bytes(hive)
        proc = _run([tool_path("hivexget"), str(path), "\\" + key.strip("\\"), name], ok=(0, 1))
        return proc.stdout.rstrip("\n") if proc.returncode == 0 else None
