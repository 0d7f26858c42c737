"""The PowerShell double served over loopback (served_double.py): runspaces of one double, its
validation and exceptions reach the caller, an unknown key is refused, and stop() ends it all."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client
from pathlib import Path

import pytest

from adapters.hyperv import hyperv_scripts as scripts
from adapters.windows_remote.powershell import Endpoint, Script
from tests.hyperv.hyperv_double import HyperVDouble
from tests.windows_remote.served_double import ADDRESS_ENV, AUTHKEY_ENV, DoubleClient, DoubleServer

LOCAL = "D:\\share"
ENDPOINT = Endpoint("hv01.test", "U_ENV", "P_ENV")


@pytest.fixture
def host(tmp_path: Path) -> HyperVDouble:
    (tmp_path / "disk.vhdx").write_bytes(b"vhdx")
    return HyperVDouble(LOCAL, tmp_path)


@pytest.fixture
def server(host: HyperVDouble) -> Iterator[DoubleServer]:
    served = DoubleServer(host)
    yield served
    served.stop()


def new_vm(vhd: str) -> Script:
    return scripts.new_vm("vm1", 2, 2 << 30, f"{LOCAL}\\{vhd}", "LabSwitch", "layerbot task t1")


def test_runspaces_share_one_double_and_its_validation(server: DoubleServer, host: HyperVDouble,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in server.environment().items():
        monkeypatch.setenv(name, value)
    client = DoubleClient.from_environment()
    one, two = (client.connect(ENDPOINT, "svc", "pw", 5) for _ in range(2))
    made = new_vm("disk.vhdx")
    created = one.run(made.text, made.parameters)
    [vm] = json.loads(created.output[0])
    states = scripts.vm_states(["vm1"], [vm["VMId"]])
    assert json.loads(two.run(states.text, states.parameters).output[0]) == [
        {"VMId": vm["VMId"], "State": "Off", "DiskWritten": vm["DiskWritten"]}]
    missing = new_vm("absent.vhdx")
    refused = two.run(missing.text, missing.parameters)
    assert refused.failed and "cannot find the file" in refused.errors[0].message
    one.close()
    two.close()
    assert host.logins == [("svc", "pw"), ("svc", "pw")]
    assert [vm["Name"] for vm in host.snapshot()] == ["vm1"]


def test_the_doubles_exception_is_raised_in_the_worker(server: DoubleServer, host: HyperVDouble) -> None:
    host.cut_after_new_vm = True
    runspace = DoubleClient(server.address, server.authkey).connect(ENDPOINT, "svc", "pw", 5)
    made = new_vm("disk.vhdx")
    with pytest.raises(ConnectionResetError, match="reset"):
        runspace.run(made.text, made.parameters)
    runspace.close()


def test_another_key_is_refused_and_serving_goes_on(server: DoubleServer, host: HyperVDouble) -> None:
    with pytest.raises(AuthenticationError):
        DoubleClient(server.address, b"not the key").connect(ENDPOINT, "svc", "pw", 5)
    assert host.logins == []
    runspace = DoubleClient(server.address, server.authkey).connect(ENDPOINT, "svc", "pw", 5)
    runspace.close()
    assert host.logins == [("svc", "pw")]


def test_stop_ends_the_threads_of_open_runspaces(host: HyperVDouble) -> None:
    served = DoubleServer(host)
    before = set(threading.enumerate())
    runspace = DoubleClient(served.address, served.authkey).connect(ENDPOINT, "svc", "pw", 5)
    served.stop()
    assert not [t for t in set(threading.enumerate()) - before if t.name.startswith("ps-double")]
    assert not served._accepter.is_alive()
    with pytest.raises((EOFError, OSError)):
        Client(served.address, authkey=served.authkey)
    runspace.close()  # the server is gone: closing is quiet
    assert {ADDRESS_ENV, AUTHKEY_ENV} == set(served.environment())
