"""The XenAPI double on a random loopback port, a connector for it, and small dynamic VHDs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters import config_model, create
from adapters.blocking import SessionPool
from adapters.retry import RetryPolicy
from adapters.xenserver import Adapter, Clients, Config

from .xapi_double import XapiDouble

USER_ENV, PASSWORD_ENV = "LAYERBOT_TEST_XEN_USER", "LAYERBOT_TEST_XEN_PASSWORD"
USER, PASSWORD = "root", "xen-secret-3f9a"


@pytest.fixture
def xapi() -> Iterator[XapiDouble]:
    double = XapiDouble({USER: PASSWORD}).start()
    yield double
    double.stop()


@pytest.fixture
def xen_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(USER_ENV, USER)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


def connector(double: XapiDouble, **overrides: Any) -> dict[str, Any]:
    return {"type": "xenserver", "host": double.url, "user_env": USER_ENV,
            "password_env": PASSWORD_ENV, "sr": "Local storage",
            "network": "Pool-wide network associated with eth0",
            "vm_template": "Windows 10 (64-bit)", **overrides}


def xen_config(double: XapiDouble, **overrides: Any) -> Config:
    return config_model("xenserver").model_validate(connector(double, **overrides))  # type: ignore[return-value]


def short_clients() -> Clients:
    """Short waits, and this test's own session pool (its entries can be checked)."""
    return Clients(timeout=10.0, event_wait=0.5, task_poll=(0.05, 0.2), sessions=SessionPool(),
                   upload_retry=RetryPolicy(attempts=3, budget=30, first_delay=0.01, max_delay=0.05))


def make_adapter(config: Config, clients: Clients) -> Adapter:
    return create(config, clients)  # type: ignore[return-value]


def dynamic_vhd(path: Path, size_mib: int = 8) -> tuple[Path, int]:
    """A dynamic VHD of random data all through (what the compositor's vhd-dynamic gives);
    returns it and its virtual size."""
    raw = path.with_suffix(".raw")
    with open(raw, "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(1 << 20))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o",
                    "subformat=dynamic,force_size", str(raw), str(path)], check=True)
    raw.unlink()
    return path, size_mib << 20
