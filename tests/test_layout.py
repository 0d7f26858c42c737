"""The package layout: one package per platform, no two modules sharing a name."""

from __future__ import annotations

import importlib
from collections import defaultdict
from pathlib import Path

import adapters

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bot", "adapters", "compositor")


def test_no_two_modules_share_a_name_in_different_packages() -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path.name not in ("__init__.py", "__main__.py"):
                seen[path.stem].append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}


def test_each_platform_with_an_adapter_is_a_package_and_its_registry_entry_imports() -> None:
    for type_name in adapters.known_types():
        if not adapters._MODULES[type_name].module.startswith("adapters."):
            continue  # registered by a test (tests.fake_adapter)
        module = importlib.import_module(adapters._MODULES[type_name].module)
        assert Path(module.__file__ or "").name == "__init__.py", type_name
        assert hasattr(module, "Config") and hasattr(module, "Adapter"), type_name


def test_bot_is_split_into_the_slack_edge_cli_runner_and_store_packages() -> None:
    for package in ("bot/slack", "bot/cli", "bot/runner", "bot/store"):
        assert (ROOT / package / "__init__.py").is_file(), package
    assert not list((ROOT / "bot").glob("slack_*.py"))


def test_no_script_directory_module_shadows_the_standard_library() -> None:
    """`python bench/x.py` puts bench/ first on sys.path: a bench/queue.py there replaced the
    stdlib queue that asyncio's thread pool imports, and every other bench failed to start."""
    import sys

    for folder in ("bench", "scripts", "tools"):
        for path in (ROOT / folder).glob("*.py"):
            assert path.stem not in sys.stdlib_module_names, path.relative_to(ROOT)
