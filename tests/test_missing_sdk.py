"""A connector whose platform SDK is not installed fails `layerbot check` and the publish
with the command that installs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import adapters
from tests.conftest import BASIC_CATALOG

ROOT = Path(__file__).parent.parent
INSTALL = "pip install 'layerbot[vsphere]'"

VSPHERE_CONNECTOR = """\
  vcenter:
    type: vsphere
    host: vcenter.example
    user_env: VSPHERE_USER
    password_env: VSPHERE_PASSWORD
    insecure: true
    datacenter: DC0
    cluster: DC0_C0
    datastore: LocalDS_0
"""

#: runs `layerbot ARGS...` in a Python where pyVmomi cannot be imported
_WITHOUT_PYVMOMI = (
    "import sys\n"
    "class NoPyVmomi:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('pyVmomi', 'pyVim'):\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "sys.meta_path.insert(0, NoPyVmomi())\n"
    "sys.argv[0] = 'layerbot'\n"
    "from bot.cli.commands import main\n"
    "main()\n"
)


@pytest.fixture
def vsphere_catalog(catalog_dir: Path) -> Path:
    text = BASIC_CATALOG.replace("templates:\n", "templates:\n  on-vcenter:\n"
                                 "    os_layer: base-os\n    connector: vcenter\n"
                                 "    disk: {size_gib: 1}\n", 1)
    text = text.replace("connectors:\n", "connectors:\n" + VSPHERE_CONNECTOR, 1)
    path = catalog_dir / "layerbot.yml"
    path.write_text(text)
    return path


def layerbot_without_pyvmomi(config: Path, tmp_path: Path,
                             *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _WITHOUT_PYVMOMI, "--config", str(config),
                           "--db", str(tmp_path / "t.db"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "VSPHERE_USER": "u", "VSPHERE_PASSWORD": "p"})


def test_check_names_the_connector_and_the_install_command(vsphere_catalog: Path,
                                                            tmp_path: Path) -> None:
    proc = layerbot_without_pyvmomi(vsphere_catalog, tmp_path, "check")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "layerbot.yml: connectors.vcenter.type:" in proc.stdout
    assert "no module pyVmomi" in proc.stdout and INSTALL in proc.stdout


def test_publish_fails_before_queueing_with_the_install_command(vsphere_catalog: Path,
                                                                tmp_path: Path) -> None:
    proc = layerbot_without_pyvmomi(vsphere_catalog, tmp_path, "publish", "on-vcenter", "--yes")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "connector 'vcenter' cannot be used" in proc.stderr and INSTALL in proc.stderr
    assert not (tmp_path / "t.db").exists()  # nothing was queued


def test_templates_of_other_connectors_still_publish(vsphere_catalog: Path,
                                                     tmp_path: Path) -> None:
    proc = layerbot_without_pyvmomi(vsphere_catalog, tmp_path, "publish", "win10-office", "--yes",
                                    "--no-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_with_the_sdk_installed_nothing_is_missing() -> None:
    assert adapters.missing_sdk("vsphere") is None
    assert adapters.missing_sdk("local") is None
