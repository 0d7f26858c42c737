"""The systemd units in deploy/systemd: systemd-analyze accepts them, they keep their hardening,
and every option their ExecStart passes exists in the CLI (a renamed option fails here)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from bot.cli.commands import main

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "deploy" / "systemd"
SERVE = UNITS / "layerbot-serve.service"
WORKER = UNITS / "layerbot-worker@.service"
SHIPPED_BINARY = "/opt/layerbot/.venv/bin/layerbot"
INSTANCE = "dc-east"

HARDENING = {
    "User": "layerbot", "StateDirectory": "layerbot", "CacheDirectory": "layerbot",
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
    "Restart": "on-failure", "CapabilityBoundingSet": "",
}


def directives(unit: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) in file order; a trailing backslash continues the line."""
    entries: list[tuple[str, str, str]] = []
    section = ""
    text = re.sub(r"\\\n", " ", unit.read_text())
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def values(unit: Path, key: str) -> list[str]:
    return [value for section, k, value in directives(unit) if section == "Service" and k == key]


def exec_start_args(unit: Path) -> list[str]:
    """ExecStart's arguments after the binary, with %i and the unit's Environment= defaults
    (${VAR}) filled in as systemd would."""
    (command,) = values(unit, "ExecStart")
    environment = dict(pair.split("=", 1) for line in values(unit, "Environment")
                       for pair in shlex.split(line))
    command = command.replace("%i", INSTANCE)
    command = re.sub(r"\$\{(\w+)\}", lambda m: environment[m.group(1)], command)
    binary, *args = shlex.split(command)
    assert binary == SHIPPED_BINARY
    return args


def cli_problems(args: list[str]) -> list[str]:
    """What click refuses in ``layerbot ARGS`` (parsed and type-checked, not run)."""
    kept = list(args)
    try:
        at = next((i for i, arg in enumerate(kept) if arg in main.list_commands(click.Context(main))), None)
        if at is None:
            return [f"no layerbot command in {kept}"]
        ctx = main.make_context("layerbot", kept[:at + 1])  # the group's options, not run
        command = main.get_command(ctx, kept[at])
        assert command is not None
        command.make_context(kept[at], kept[at + 1:], parent=ctx)
    except click.ClickException as exc:
        return [exc.format_message()]
    return []


@pytest.mark.parametrize("unit", [SERVE, WORKER], ids=lambda p: p.name)
def test_every_execstart_option_exists_in_the_cli(unit: Path) -> None:
    assert cli_problems(exec_start_args(unit)) == []


def test_a_renamed_option_or_a_bad_value_is_caught() -> None:
    args = exec_start_args(WORKER)
    renamed = [("--slotz" if a == "--slots" else a) for a in args]
    assert "--slotz" in " ".join(cli_problems(renamed))
    bad_slots = [*args[:args.index("--slots") + 1], "0", *args[args.index("--slots") + 2:]]
    assert "--slots" in " ".join(cli_problems(bad_slots))


def test_the_worker_instance_is_its_runner_tag() -> None:
    args = exec_start_args(WORKER)
    assert args[args.index("worker"):args.index("worker") + 3] == ["worker", "--tags", INSTANCE]


@pytest.mark.parametrize("unit", [SERVE, WORKER], ids=lambda p: p.name)
def test_the_units_are_hardened(unit: Path) -> None:
    for key, expected in HARDENING.items():
        assert values(unit, key) == [expected], key
    assert values(unit, "KillMode") == ["mixed"]  # layerbot stops its own children on SIGTERM
    assert values(unit, "RestartPreventExitStatus") == ["2"]  # a bad catalog: no restart loop
    assert all(v.startswith("/etc/layerbot/credentials/") for v in
               [c.partition(":")[2] for c in values(unit, "LoadCredential")])


def test_serve_takes_its_slack_secrets_as_credentials() -> None:
    names = {c.partition(":")[0] for c in values(SERVE, "LoadCredential")}
    assert names == {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"}
    assert not any("TOKEN" in e or "SECRET" in e for e in values(SERVE, "Environment"))


def render(unit: Path, directory: Path) -> Path:
    """The unit with the shipped binary replaced by this virtualenv's (verify checks it runs)."""
    binary = Path(sys.executable).parent / "layerbot"
    assert binary.is_file(), f"{binary}: install layerbot in this virtualenv (pip install -e .)"
    text = unit.read_text()
    assert SHIPPED_BINARY in text
    target = directory / unit.name
    target.write_text(text.replace(SHIPPED_BINARY, str(binary)))
    return target


def systemd_analyze_verify(*units: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing: scripts/setup.sh installs the systemd package"
    # unknown keys and unparsable values are only warnings (exit 0): any output is a failure
    return subprocess.run([tool, "verify", "--man=no", *map(str, units)], capture_output=True,
                          text=True, timeout=60, cwd=units[0].parent, check=False)


def test_systemd_analyze_verify_accepts_both_units(tmp_path: Path) -> None:
    render(SERVE, tmp_path)
    render(WORKER, tmp_path)
    result = systemd_analyze_verify(tmp_path / SERVE.name, tmp_path / f"layerbot-worker@{INSTANCE}.service")
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_systemd_analyze_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt directive is reported."""
    broken = render(SERVE, tmp_path)
    broken.write_text(broken.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    result = systemd_analyze_verify(broken)
    assert "ProtectSytem" in result.stdout + result.stderr


def test_the_operations_guide_installs_what_the_units_run() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    assert SHIPPED_BINARY in guide
    for unit in (SERVE, WORKER):
        for path in [c.partition(":")[2] for c in values(unit, "LoadCredential")] + \
                [f.lstrip("-").replace("%i", "TAG") for f in values(unit, "EnvironmentFile")]:
            assert path in guide, path
