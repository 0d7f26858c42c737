"""``type: pvs`` settings are checked at load; errors name the key and the value; the
``hypervisor`` it names is checked and linked by the catalog."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import adapters.nutanix
from adapters import close_blocking, config_model, create
from adapters.base import AuthError, Capability, Watcher
from adapters.blocking import SessionPool
from adapters.pvs import Clients
from adapters.pvs.pvs_names import MAX_VDISK_NAME, vdisk_name
from adapters.windows_remote.powershell import RemoteClients
from bot.catalog import CatalogError, load_catalog
from tests.conftest import BASIC_CATALOG


@pytest.fixture(autouse=True)
def pvs_login(monkeypatch: pytest.MonkeyPatch) -> None:
    """The connector's user and password variables are set (they are checked at load)."""
    monkeypatch.setenv("PVS_USER", "CORP\\svc-pvs")
    monkeypatch.setenv("PVS_PASSWORD", "x")


BASE = {"type": "pvs", "server": "pvs01.example", "user_env": "PVS_USER", "password_env": "PVS_PASSWORD",
        "store": "Store1", "site": "Site1", "store_share": "\\\\pvs01\\Store1"}


def problems(**settings: Any) -> str:
    with pytest.raises(ValidationError) as err:
        config_model("pvs").model_validate({**BASE, **settings})
    return str(err.value)


def test_defaults_a_standard_image_caching_in_ram_with_overflow() -> None:
    cfg = config_model("pvs").model_validate(BASE)
    assert cfg.write_cache == "cacheInDeviceRamWithOverflowOnHardDisk"  # type: ignore[attr-defined]
    assert cfg.write_cache_type == 9  # type: ignore[attr-defined]
    private = config_model("pvs").model_validate({**BASE, "access_mode": "private"})
    assert private.write_cache_type == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("settings,expected", [
    ({"write_cache": "cacheInRam"}, r"write_cache\n.*'cacheOnServer'.*input_value='cacheInRam'"),
    ({"access_mode": "private", "write_cache": "cacheOnServer"},
     r"write_cache 'cacheOnServer' does not go with access_mode 'private'"),
    ({"write_cache": "private"}, r"write_cache 'private' does not go with access_mode 'standard'"),
    ({"license_mode": "retail"}, r"license_mode\n.*'none', 'mak' or 'kms'.*input_value='retail'"),
    ({"store_share": "//pvs01/Store1"}, r"store_share\n.*'//pvs01/Store1' is not a UNC path"),
    ({"store_share": "\\\\pvs01"}, r"store_share\n.*is not a UNC path"),
    ({"auth": "basic"}, r"auth\n.*'ntlm', 'kerberos' or 'credssp'"),
    ({"password_env": "hunter2!"}, r"password_env\n.*'hunter2!' is not an environment variable name"),
    ({"site": ""}, r"site\n.*at least 1 character"),
    ({"stor": "x"}, r"stor\n.*Extra inputs are not permitted"),
])
def test_bad_settings_name_the_key_and_value(settings: dict[str, Any], expected: str) -> None:
    text = problems(**settings)
    assert re.search(expected, text, re.S), text


def test_a_long_image_name_is_shortened_to_what_pvs_takes_keeping_its_stamp() -> None:
    long = "a" * 60 + "-20261202-101010-abc123"
    name = vdisk_name(long)
    assert len(name) == MAX_VDISK_NAME and name.endswith("-20261202-101010-abc123")
    assert vdisk_name("win10-20261202-101010-abc123") == "win10-20261202-101010-abc123"


PVS = r"""
  farm:
    type: pvs
    server: pvs01.example
    user_env: PVS_USER
    password_env: PVS_PASSWORD
    store: Store1
    site: Site1
    store_share: '\\pvs01\Store1'
    hypervisor: {hypervisor}
"""
AHV = """\
  ahv:
    type: nutanix
    prism_url: https://pc.example:9440
    user_env: PRISM_USER
    password_env: PRISM_PASSWORD
    cluster: c1
    container: ct1
    subnet: s1
"""


def catalog_with(write_catalog: Callable[[str], Path], hypervisor: str) -> str:
    pvs = PVS.lstrip("\n").format(hypervisor=hypervisor)
    return BASIC_CATALOG.replace("connectors:\n", "connectors:\n" + pvs + AHV)


def test_the_hypervisor_is_linked_at_load(write_catalog: Callable[[str], Path]) -> None:
    cat = load_catalog(write_catalog(catalog_with(write_catalog, "ahv")))
    assert cat.connectors["farm"].linked("hypervisor") is cat.connectors["ahv"]
    assert cat.connectors["farm"].store_share == "\\\\pvs01\\Store1"  # type: ignore[attr-defined]


@pytest.mark.parametrize("name,expected", [
    ("ahb", "layerbot.yml: connectors.farm.hypervisor: no connector named 'ahb' (did you mean 'ahv'?)"),
    ("folder", "layerbot.yml: connectors.farm.hypervisor: connector 'folder' is of type 'local'; it "
               "must be one of hyperv, nutanix, vsphere, xenserver"),
    ("farm", "layerbot.yml: connectors.farm.hypervisor: connector 'farm' is of type 'pvs'; it "
             "must be one of hyperv, nutanix, vsphere, xenserver"),
])
def test_a_hypervisor_missing_or_of_another_type_is_named(write_catalog: Callable[[str], Path],
                                                          name: str, expected: str) -> None:
    with pytest.raises(CatalogError) as err:
        load_catalog(write_catalog(catalog_with(write_catalog, name)))
    assert err.value.problems == [expected]


def test_a_connector_with_a_hypervisor_watches_like_it(write_catalog: Callable[[str], Path],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PVS_USER", "PVS_PASSWORD", "PRISM_USER", "PRISM_PASSWORD"):
        monkeypatch.setenv(var, "x")
    cat = load_catalog(write_catalog(catalog_with(write_catalog, "ahv")))
    with_vm = create(cat.connectors["farm"], Clients(remote=RemoteClients(sessions=SessionPool())))
    try:
        assert with_vm.capabilities == Capability.WATCH_POWER | Capability.CREATES_VM
        assert isinstance(with_vm, Watcher)
        assert with_vm.hypervisor.type_name == "nutanix"  # type: ignore[attr-defined]
    finally:
        close_blocking(with_vm)


def test_a_pvs_connector_that_cannot_open_closes_its_hypervisor(
        write_catalog: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PRISM_USER", "PRISM_PASSWORD"):
        monkeypatch.setenv(var, "x")
    cat = load_catalog(write_catalog(catalog_with(write_catalog, "ahv")))
    monkeypatch.delenv("PVS_USER")  # unset after the load: the PVS side fails to open
    closed: list[str] = []
    real_close = adapters.nutanix.Adapter.close

    async def close(self: Any) -> None:
        closed.append(self.type_name)
        await real_close(self)

    monkeypatch.setattr(adapters.nutanix.Adapter, "close", close)
    with pytest.raises(AuthError, match="environment variable PVS_USER is not set"):
        create(cat.connectors["farm"], Clients(remote=RemoteClients(sessions=SessionPool())))
    assert closed == ["nutanix"]


async def test_on_the_event_loop_the_hypervisor_is_closed_by_that_loop_without_blocking_it(
        write_catalog: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PRISM_USER", "PRISM_PASSWORD"):
        monkeypatch.setenv(var, "x")
    cat = load_catalog(write_catalog(catalog_with(write_catalog, "ahv")))
    monkeypatch.delenv("PVS_USER")
    closed_on: list[asyncio.AbstractEventLoop] = []
    real_close = adapters.nutanix.Adapter.close

    async def close(self: Any) -> None:
        await asyncio.sleep(0.05)  # a close that waits for its sessions
        closed_on.append(asyncio.get_running_loop())
        await real_close(self)

    monkeypatch.setattr(adapters.nutanix.Adapter, "close", close)
    with pytest.raises(AuthError, match="environment variable PVS_USER is not set"):
        create(cat.connectors["farm"], Clients(remote=RemoteClients(sessions=SessionPool())))
    assert closed_on == []  # create returned at once: the close runs on this loop, later
    async with asyncio.timeout(10):
        while not closed_on:
            await asyncio.sleep(0.01)
    assert closed_on == [asyncio.get_running_loop()]


def test_a_hyper_v_hypervisor_sharing_the_store_share_is_refused_at_load(
        write_catalog: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    hyperv = r"""
  hv:
    type: hyperv
    host: hv01.example
    user_env: PVS_USER
    password_env: PVS_PASSWORD
    share: '\\PVS01\store1\'
    share_local_path: 'D:\Store1'
    switch: LabSwitch
"""
    text = BASIC_CATALOG.replace("connectors:\n", "connectors:\n" + PVS.lstrip("\n").format(
        hypervisor="hv") + hyperv.lstrip("\n"))
    with pytest.raises(CatalogError) as err:
        load_catalog(write_catalog(text))
    assert err.value.problems == [
        "layerbot.yml: connectors.farm.hypervisor: connector 'hv' (type hyperv) copies its disks to "
        "share '\\\\PVS01\\store1', which is this connector's store_share '\\\\pvs01\\Store1': "
        "give connectors.hv.share another folder"]
    load_catalog(write_catalog(text.replace("store1\\'", "store1\\hv'")))  # a folder of its own


def test_the_login_checks_are_those_of_hyper_v(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PVS_PASSWORD")
    assert "environment variable PVS_PASSWORD (password_env) is not set" in problems()
    monkeypatch.setenv("PVS_PASSWORD", "x")
    monkeypatch.setitem(__import__("sys").modules, "gssapi", None)  # not installed
    assert ("auth 'kerberos' needs the Python module gssapi, which is not installed: "
            "pip install 'layerbot[hyperv]'") in problems(auth="kerberos")
