"""Platform SDKs are imported only when a connector of that type is used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).parent.parent / "examples" / "demo" / "layerbot.yml"


def test_loading_a_local_catalog_imports_no_platform_sdk() -> None:
    code = (
        "import sys, pathlib\n"
        "from bot.cli import main\n"
        "from bot.catalog import load_catalog\n"
        "from bot.summary import plan\n"
        f"cat = load_catalog(pathlib.Path({str(DEMO)!r}))\n"
        "plan(cat, 'demo-office', check_cache=False)\n"
        "heavy = ('pyVmomi', 'google.cloud', 'azure', 'slack_bolt')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
