"""What a Citrix Provisioning publish records (see adapters/resources.py for the lifetimes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from adapters.resources import Lifetime, Resource


class PvsFile(Resource):
    """The vhdx copied into the store's folder (recorded before the copy starts)."""

    kind: ClassVar[str] = "pvs.file"
    #: UNC path of the file
    path: str

    def describe(self) -> str:
        return f"vDisk file {self.path}"


class PvsDiskLocator(Resource):
    """The vDisk (its disk locator) in a store and site (recorded before it is imported)."""

    kind: ClassVar[str] = "pvs.disk_locator"
    name: str
    store: str
    site: str

    def describe(self) -> str:
        return f"vDisk {self.name} (store {self.store}, site {self.site})"


class PvsPublished(Resource):
    """What the next step and, with a hypervisor, the watch need (``Published.resource``)."""

    kind: ClassVar[str] = "pvs.published"
    lifetime: ClassVar[Lifetime] = Lifetime.MARK
    name: str
    store: str
    site: str
    server: str
    #: the hypervisor adapter's own Published (JSON), when it also created the target VM
    vm: dict[str, Any] | None = None

    def describe(self) -> str:
        return f"vDisk {self.name} (store {self.store}, site {self.site})"


class PvsConvertedDisk(Resource):
    """The vhdx converted for the hypervisor connector (only feeds its upload)."""

    kind: ClassVar[str] = "pvs.converted_disk"
    lifetime: ClassVar[Lifetime] = Lifetime.STAGING
    path: Path

    def describe(self) -> str:
        return f"converted disk {self.path}"
