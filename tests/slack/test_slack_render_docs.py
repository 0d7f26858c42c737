"""docs/slack.md's message renderings are the script's output from the real blocks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "render_messages.py"


def test_docs_section_equals_the_scripts_output() -> None:
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() in (ROOT / "docs" / "slack.md").read_text(), (
        "docs/slack.md is out of date: run scripts/render_messages.py --write")
    for expected in ("Review and publish", "[Publish]", "@alice", "2023-11-14 22:13 UTC"):
        assert expected in out, expected
    assert "<!date^" not in out and "<@" not in out  # shown as a reader sees them


def test_readme_section_equals_the_scripts_output() -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), "--readme"], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    assert out.strip() in (ROOT / "README.md").read_text(), (
        "README.md is out of date: run scripts/render_messages.py --write")
    assert "Thread reply: failed" in out and "Review and publish" not in out
