"""Shared fixtures: small catalogs with real layer content in a temp dir."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bot.catalog import Catalog, load_catalog
from bot.store.task_store import TaskStore
from compositor import scratch
from tests.azure.azurite import Azurite, AzuriteUnavailable, start_azurite
from tests.catalog_schema_check import wrap_load_catalog

LONG_ENV_VAR = "LAYERBOT_LONG"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", help="also run the tests marked long")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--long") or os.environ.get(LONG_ENV_VAR) == "1":
        return
    skip = pytest.mark.skip(reason=f"a long variant: --long or {LONG_ENV_VAR}=1 runs it")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def ram_scratch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path | None]:
    """Each test's builds work in a tmpfs folder of their own (the compositor's child processes
    inherit it through the environment); compositor tests then check that nothing was left
    there. None where this machine has no writable tmpfs with 2 GiB to spare: builds then work
    on disk."""
    base = next((d for d in scratch.DEFAULT_RAM_DIRS if os.access(d, os.W_OK)), None)
    folder = Path(tempfile.mkdtemp(prefix="layerbot-test-", dir=base)) if base else None
    # a small tmpfs (Docker's 64 MiB /dev/shm) fits no build: they all work on disk there
    roomy = folder is not None and min(scratch._free_bytes(folder), scratch._mem_available()) >= 2 << 30
    if folder is None or not roomy or scratch.ram_root(folder) is None:
        if folder is not None:
            shutil.rmtree(folder)
        monkeypatch.setenv(scratch.ENV_VAR, "off")
        yield None
        return
    monkeypatch.setenv(scratch.ENV_VAR, str(folder))
    try:
        yield folder
        if "tests/compositor/" in str(request.node.path):
            root = scratch.ram_root(folder)
            assert root is not None
            assert sorted(os.listdir(root)) in ([], [".lock"]), "a build left files in RAM"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_tar(path: Path, members: dict[str, bytes | None], *, compression: str = "") -> Path:
    """A tar layer: name -> content (None makes a directory), owned by root."""
    mode = f"w:{compression}" if compression else "w"
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.uid = info.gid = 0
            info.mtime = 1_700_000_000
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return path


BASIC_CATALOG = """\
layers:
  base-os: {kind: os, source: layers/os.tar}
  office: {kind: app, source: layers/office}
  vda: {kind: platform, source: layers/vda.tar.gz}
connectors:
  folder:
    type: local
    path: ./published
    format: qcow2
    scripts: [scripts/setup.sh]
templates:
  win10-office:
    description: Windows 10 with Office
    icon: ":computer:"
    os_layer: base-os
    app_layers: [office]
    platform_layer: vda
    connector: folder
    disk: {size_gib: 1}
runner:
  max_parallel: 2
  lease_seconds: 3
"""


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    """A directory with layers (tar, directory, tar.gz) and a connector script."""
    root = tmp_path / "catalog"
    (root / "layers" / "office" / "opt" / "office").mkdir(parents=True)
    (root / "layers" / "office" / "opt" / "office" / "README").write_text("office\n")
    (root / "layers" / "office" / "etc").mkdir()
    (root / "layers" / "office" / "etc" / "motd").write_text("office motd\n")
    write_tar(root / "layers" / "os.tar", {
        "etc/": None, "etc/os-release": b"ID=base\n", "etc/motd": b"base motd\n",
        "opt/": None, "opt/legacy/": None, "opt/legacy/tool": b"legacy\n",
    })
    write_tar(root / "layers" / "vda.tar.gz", {"opt/": None, "opt/vda/": None,
                                               "opt/vda/VDA.txt": b"vda\n"}, compression="gz")
    (root / "scripts").mkdir()
    (root / "scripts" / "setup.sh").write_text("#!/bin/sh\necho configured > /var/log/setup.log\n")
    (root / "layerbot.yml").write_text(BASIC_CATALOG)
    return root


@pytest.fixture
def write_catalog(catalog_dir: Path) -> Callable[[str], Path]:
    """Replace layerbot.yml with the given text; returns its path."""

    def write(text: str) -> Path:
        path = catalog_dir / "layerbot.yml"
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def catalog(catalog_dir: Path) -> Catalog:
    return load_catalog(catalog_dir / "layerbot.yml")


@pytest.fixture
def store(tmp_path: Path) -> TaskStore:
    s = TaskStore(tmp_path / "layerbot.db")
    yield s
    s.close()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Azurite once per test session, for tests/azure and the contract suite alike."""
    try:
        peer = start_azurite(tmp_path_factory.mktemp("azurite"))
    except AzuriteUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield peer
    peer.stop()


@pytest.fixture(autouse=True)
def _loaded_catalogs_fit_the_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever catalog a test loads, `layerbot schema` must take too (tests/catalog_schema_check.py)."""
    wrap_load_catalog(monkeypatch)
