"""Platform adapters behind one interface (see :mod:`adapters.base`).

The registry maps a connector ``type`` to its module, imported only when a
connector of that type is used, so a catalog with a local folder never pays for
google-cloud-compute's import time. Each adapter module defines ``Config`` (a
:class:`~adapters.base.ConnectorConfig` subclass whose ``type`` is a Literal) and
``Adapter`` (constructed with that config). Platform SDKs are imported inside the
adapter's methods, never at module level.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from adapters.base import Adapter, ConnectorConfig

#: connector type -> (module, pip package that provides the SDK, for the hint)
_MODULES: dict[str, tuple[str, str | None]] = {
    "local": ("adapters.local", None),
    "qemu": ("adapters.qemu", None),
    "vsphere": ("adapters.vsphere", "pyvmomi"),
    "azure": ("adapters.azure", "azure-mgmt-compute"),
    "azure-mcs": ("adapters.azure_mcs", "azure-mgmt-compute"),
    "gcp": ("adapters.gcp", "google-cloud-compute"),
    "nutanix": ("adapters.nutanix", None),
    "hyperv": ("adapters.hyperv", "pywinrm"),
    "xenserver": ("adapters.xenserver", "XenAPI"),
    "pvs": ("adapters.pvs", None),
}


class UnknownConnectorType(ValueError):
    pass


def register(type_name: str, module: str, sdk_package: str | None = None) -> None:
    """Add a connector type served by an adapter module outside this package."""
    _MODULES[type_name] = (module, sdk_package)


def known_types() -> list[str]:
    """Connector types whose adapter module exists in this installation."""
    return [t for t, (mod, _) in _MODULES.items() if importlib.util.find_spec(mod) is not None]


def _module(type_name: str) -> ModuleType:
    entry = _MODULES.get(type_name)
    if entry is None or importlib.util.find_spec(entry[0]) is None:
        raise UnknownConnectorType(
            f"unknown connector type {type_name!r} (known: {', '.join(known_types())})"
        )
    return importlib.import_module(entry[0])


def config_model(type_name: str) -> type[ConnectorConfig]:
    return _module(type_name).Config  # type: ignore[no-any-return]


def create(config: ConnectorConfig) -> Adapter:
    adapter: Adapter = _module(config.type).Adapter(config)
    return adapter
