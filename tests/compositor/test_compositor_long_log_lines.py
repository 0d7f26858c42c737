"""A compositor child's log line over asyncio's 64 KiB default never fails the build."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from compositor import ImageSpec, LayerSource
from compositor.isolated import build_image_isolated
from compositor.worker import MAX_RECORD_CHARS, RecordLines

BIG = 100 * 1024


async def test_a_child_record_over_64_kib_is_logged_and_the_build_succeeds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    record = json.dumps({"log": {"level": logging.WARNING, "logger": "compositor.test",
                                 "message": "y" * BIG}})
    # the child writes it as its interpreter starts (sitecustomize), before its own logging
    (hooks / "sitecustomize.py").write_text(f"import sys\nsys.stderr.write({record!r} + '\\n')\n")
    monkeypatch.setenv("PYTHONPATH", str(hooks))
    layer = tmp_path / "layer"
    (layer / "etc").mkdir(parents=True)
    (layer / "etc" / "os-release").write_text("ID=test\n")
    spec = ImageSpec(layers=(LayerSource("os", "os", layer),), size_gib=1, format="raw")
    with caplog.at_level(logging.WARNING):
        built = await build_image_isolated(spec, work_dir=tmp_path / "work", cache_dir=tmp_path / "cache")
    assert built.path.is_file()
    logged = [r.getMessage() for r in caplog.records if r.name == "compositor.test"]
    assert len(logged) == 1 and logged[0].endswith("y" * BIG)


def test_the_child_truncates_an_over_long_record() -> None:
    record = logging.LogRecord("compositor.x", logging.INFO, __file__, 1, "%s", ("z" * BIG,), None)
    line = RecordLines().format(record)
    assert len(line) < 64 * 1024
    message = json.loads(line)["log"]["message"]
    assert message.startswith("z" * MAX_RECORD_CHARS) and "more characters not shown" in message
