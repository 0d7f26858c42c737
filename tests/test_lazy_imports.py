"""Platform SDKs are imported only when a connector of that type is used, and ``--help``
imports none of the libraries the commands need only when they run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.slack.conftest import BOT_TOKEN, SECRET
from tests.slack.slack_double import SlackDouble
from tests.slack.test_slack_serve import free_port

ROOT = Path(__file__).parent.parent
DEMO = ROOT / "examples" / "demo" / "layerbot.yml"
PLATFORM_SDKS = ("pyVmomi", "pyVim", "azure", "google.cloud", "XenAPI", "pypsrp", "smbprotocol",
                 "ntnx")
#: what the commands import when they run; `--help` needs none of it
COMMAND_LIBRARIES = ("rich", "pydantic", "yaml", "sqlite_utils", "asyncio", "aiohttp",
                     "slack_sdk", "slack_bolt", "compositor", "adapters")

#: runs `layerbot ARGS...` and, at exit, writes the names of the modules it imported
_CLI_REPORTING_MODULES = (
    "import atexit, json, os, sys\n"
    "def report():\n"
    "    with open(os.environ['MODULES_OUT'], 'w') as f:\n"
    "        json.dump(sorted(sys.modules), f)\n"
    "atexit.register(report)\n"
    "sys.argv[0] = 'layerbot'\n"
    "from bot.cli.commands import main\n"
    "main()\n"
)


def _among(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return [m for m in modules if m.startswith(prefixes)]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "MODULES_OUT": str(tmp_path / "modules.json"),
            "LAYERBOT_DB": str(tmp_path / "t.db")}


def cli_modules(tmp_path: Path, *args: str) -> list[str]:
    """The modules `layerbot ARGS...` imported (it must succeed)."""
    proc = subprocess.run([sys.executable, "-c", _CLI_REPORTING_MODULES, *args], cwd=ROOT,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    modules: list[str] = json.loads((tmp_path / "modules.json").read_text())
    return modules


def test_loading_a_local_catalog_imports_no_platform_sdk() -> None:
    code = (
        "import sys, pathlib\n"
        "from bot.cli.commands import main\n"
        "from bot.catalog import load_catalog\n"
        "from bot.runner.planning import plan\n"
        f"cat = load_catalog(pathlib.Path({str(DEMO)!r}))\n"
        "plan(cat, 'demo-office', check_cache=False)\n"
        f"heavy = {(*PLATFORM_SDKS, 'slack_bolt')!r}\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_imports_only_the_command_line_parser(tmp_path: Path) -> None:
    for args in (["--help"], ["publish", "--help"]):
        modules = cli_modules(tmp_path, *args)
        assert _among(modules, PLATFORM_SDKS + COMMAND_LIBRARIES) == [], args
    # `vm` lives with the qemu adapter (adapters/qemu/), which it imports: no SDK, no Slack
    modules = cli_modules(tmp_path, "vm", "--help")
    assert _among(modules, (*PLATFORM_SDKS, "slack_sdk", "slack_bolt", "aiohttp")) == []


def test_the_help_summaries_of_lazy_commands_are_their_own() -> None:
    from click import Context

    from bot.cli.commands import LazyGroup, main

    for name, (_, summary) in LazyGroup.lazy.items():
        command = main.get_command(Context(main), name)
        assert command is not None and command.get_short_help_str(200) == summary, name


def test_templates_and_tasks_import_no_platform_sdk_nor_slack(tmp_path: Path) -> None:
    from bot.store.task_store import TaskStore

    TaskStore(tmp_path / "t.db").close()  # `tasks` reads a database; it creates none
    for args in (["--config", str(DEMO), "templates"], ["tasks"]):
        modules = cli_modules(tmp_path, *args)
        assert "bot.cli.commands" in modules  # the hook saw the command run
        assert _among(modules, (*PLATFORM_SDKS, "slack_bolt")) == [], args


async def test_serve_with_a_local_connector_imports_no_platform_sdk(tmp_path: Path) -> None:
    double = await SlackDouble().start()
    port = free_port()
    env = {**_env(tmp_path), "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET,
           "SLACK_API_URL": double.api_url}
    env.pop("SLACK_APP_TOKEN", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CLI_REPORTING_MODULES, "--config", str(DEMO), "serve",
        "--host", "127.0.0.1", "--port", str(port), cwd=ROOT, env=env,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        assert resp.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    assert proc.returncode is None
                    await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await double.close()
    modules = json.loads((tmp_path / "modules.json").read_text())
    assert "slack_bolt" in modules  # the hook saw the Slack app start
    assert _among(modules, PLATFORM_SDKS) == []


def test_the_cli_and_its_lazy_commands_form_no_import_circle() -> None:
    """`vm` and `serve` are loaded by the group, never import the module that defines it."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for module in ("adapters/qemu/vm_cli.py", "bot/slack/serve.py"):
        tree = ast.parse((root / module).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        assert "bot.cli.commands" not in imported, module


def test_a_catalog_with_a_gcp_connector_loads_without_google_cloud_compute(tmp_path: Path) -> None:
    """Validating a gcp connector (templates, check, planning) never pays compute_v1's ~3 s."""
    for entry in DEMO.parent.iterdir():  # the demo's layers and scripts, by relative paths
        if entry.name != DEMO.name:
            (tmp_path / entry.name).symlink_to(entry)
    catalog = tmp_path / "layerbot.yml"
    catalog.write_text(DEMO.read_text())
    code = (
        "import sys, pathlib, yaml\n"
        "from bot.catalog import load_catalog\n"
        f"p = pathlib.Path({str(catalog)!r})\n"
        "raw = yaml.safe_load(p.read_text())\n"
        "name = next(iter(raw['connectors']))\n"
        "raw['connectors']['gce'] = {'type': 'gcp', 'project': 'my-project-1', "
        "'zone': 'us-central1-a', 'bucket': 'my-bucket'}\n"
        "raw['templates'][next(iter(raw['templates']))]['connector'] = 'gce'\n"
        "p.write_text(yaml.safe_dump(raw))\n"
        "cat = load_catalog(p)\n"
        "import adapters.gcp\n"
        "print(sorted(m for m in sys.modules if m.startswith('google.cloud.compute')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=DEMO.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
