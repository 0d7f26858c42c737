"""Platform adapters behind one interface (see :mod:`adapters.base`).

The registry maps a connector ``type`` to its module, imported only when a
connector of that type is used, so a catalog with a local folder never pays for
google-cloud-compute's import time. Each adapter module defines ``Config`` (a
:class:`~adapters.base.ConnectorConfig` subclass whose ``type`` is a Literal) and
``Adapter`` (constructed with that config). Platform SDKs are imported inside the
adapter's methods, never at module level.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import threading
from dataclasses import dataclass
from types import ModuleType

from adapters.base import Adapter, ConnectorConfig


@dataclass(frozen=True)
class AdapterEntry:
    module: str
    #: modules the platform SDK provides (checked without importing them)
    sdk_modules: tuple[str, ...] = ()
    #: what installs them, for the error when one is missing
    install: str | None = None


def _extra(name: str) -> str:
    return f"pip install 'layerbot[{name}]'"


_AZURE = ("azure.mgmt.compute", "azure.storage.blob", "azure.identity")

#: connector type -> its adapter module and SDK; the extras are in pyproject.toml
_MODULES: dict[str, AdapterEntry] = {
    "local": AdapterEntry("adapters.local"),
    "qemu": AdapterEntry("adapters.qemu"),
    "vsphere": AdapterEntry("adapters.vsphere", ("pyVmomi",), _extra("vsphere")),
    "azure": AdapterEntry("adapters.azure", _AZURE, _extra("azure")),
    "azure-mcs": AdapterEntry("adapters.azure_mcs", _AZURE, _extra("azure")),
    "gcp": AdapterEntry("adapters.gcp", ("google.cloud.compute_v1", "google.cloud.storage"),
                        _extra("gcp")),
    # Prism Central v3 REST through aiohttp, a core dependency (adapters/nutanix says why)
    "nutanix": AdapterEntry("adapters.nutanix"),
    "hyperv": AdapterEntry("adapters.hyperv", ("pypsrp", "smbprotocol"), _extra("hyperv")),
    "xenserver": AdapterEntry("adapters.xenserver", ("XenAPI",), _extra("xen")),
    # the same transport as hyperv (PowerShell remoting, SMB); [pvs] installs [hyperv]
    "pvs": AdapterEntry("adapters.pvs", ("pypsrp", "smbprotocol"), _extra("pvs")),
}


class UnknownConnectorType(ValueError):
    pass


class SDKMissing(RuntimeError):
    """The connector type's platform SDK is not installed; the message says how to install it."""


def register(type_name: str, module: str, sdk_modules: tuple[str, ...] = (),
             install: str | None = None) -> None:
    """Add a connector type served by an adapter module outside this package."""
    _MODULES[type_name] = AdapterEntry(module, sdk_modules, install)


def registry() -> dict[str, AdapterEntry]:
    """Every registered connector type, for :func:`restore_registry` in a child process."""
    return dict(_MODULES)


def restore_registry(entries: dict[str, AdapterEntry]) -> None:
    """Register in this process the types :func:`registry` gave in another."""
    _MODULES.update(entries)


def known_types() -> list[str]:
    """Connector types whose adapter module exists in this installation."""
    return [t for t, e in _MODULES.items() if importlib.util.find_spec(e.module) is not None]


def _installed(module: str) -> bool:
    try:  # imports the parent packages of a dotted name, never the module itself
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_sdk(type_name: str) -> str | None:
    """Why a connector of this type cannot work here (its SDK is not installed), or None."""
    entry = _MODULES.get(type_name)
    if entry is None:
        return None
    absent = [m for m in entry.sdk_modules if not _installed(m)]
    if not absent:
        return None
    install = f": install it with: {entry.install}" if entry.install else ""
    return (f"the {type_name} connector needs its platform SDK, which is not installed "
            f"(no module {', '.join(absent)}){install}")


def _module(type_name: str) -> ModuleType:
    entry = _MODULES.get(type_name)
    if entry is None or importlib.util.find_spec(entry.module) is None:
        raise UnknownConnectorType(
            f"unknown connector type {type_name!r} (known: {', '.join(known_types())})"
        )
    return importlib.import_module(entry.module)


def config_model(type_name: str) -> type[ConnectorConfig]:
    return _module(type_name).Config  # type: ignore[no-any-return]


def adapter_class(type_name: str) -> type[Adapter]:
    """The connector type's adapter class (imports its module, not its SDK)."""
    return _module(type_name).Adapter  # type: ignore[no-any-return]


def create(config: ConnectorConfig, clients: object | None = None) -> Adapter:
    """The connector's adapter; SDKMissing when its platform SDK is not installed.
    ``clients`` is the platform's client/session factory (the adapter module's ``Clients``);
    None: the platform's own SDK with its defaults."""
    problem = missing_sdk(config.type)
    if problem is not None:
        raise SDKMissing(problem)
    cls = _module(config.type).Adapter
    adapter: Adapter = cls(config) if clients is None else cls(config, clients=clients)
    return adapter


def close_blocking(adapter: Adapter) -> None:
    """Run ``adapter.close()`` to the end from synchronous code (planning a /publish)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(adapter.close())
        return
    # on an event loop's own thread (a synchronous helper called from a coroutine): a loop
    # cannot run inside it, so the close gets a thread and loop of its own
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(adapter.close())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="adapter-close")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
