"""Azure Compute Gallery: the image definition (made if missing) and the image version made
from the uploaded disk (``type: azure-mcs``)."""

from __future__ import annotations

from typing import Any

from adapters.azure.arm import Arm
from adapters.azure.arm_errors import AzureNotFoundError
from adapters.azure.azure_config import McsConfig
from adapters.azure.settle import settled
from adapters.base import PlatformError


def definition_body(cfg: McsConfig) -> dict[str, Any]:
    """GalleryImage_Create.json's shape."""
    ident = cfg.identifier
    identifier = {"publisher": ident.publisher, "offer": ident.offer or cfg.image_definition,
                  "sku": ident.sku or cfg.image_definition}
    return {"location": cfg.location, "tags": cfg.tags,
            "properties": {"osType": cfg.os_type, "osState": cfg.os_state,
                           "hyperVGeneration": cfg.hyper_v_generation,
                           "identifier": identifier}}


def version_body(cfg: McsConfig, disk_id: str) -> dict[str, Any]:
    """GalleryImageVersion_Create.json's shape, with the managed disk as the OS disk source."""
    regions = [{"name": r, "regionalReplicaCount": cfg.replica_count,
                "storageAccountType": "Standard_LRS"} for r in cfg.regions()]
    return {"location": cfg.location, "tags": cfg.tags,
            "properties": {
                "publishingProfile": {"targetRegions": regions, "replicaCount": cfg.replica_count},
                "storageProfile": {"osDiskImage": {"source": {"id": disk_id}}}}}


async def ensure_definition(arm: Arm) -> tuple[str, bool]:
    """The image definition's id, and whether this call created it. An existing one must
    have the connector's OS type and generation (a version of another would not boot)."""
    cfg = arm.cfg
    assert isinstance(cfg, McsConfig)
    rg, gallery, name = cfg.resource_group, cfg.gallery, cfg.image_definition
    try:
        found = await arm.call(lambda c: c.gallery_images.get(rg, gallery, name),
                               f"reading the image definition {gallery}/{name}")
    except AzureNotFoundError:
        made = await arm.wait(lambda c: c.gallery_images.begin_create_or_update(
            rg, gallery, name, definition_body(cfg)),
            f"creating the image definition {gallery}/{name}")
        return str(made["id"]), True
    props = found.get("properties") or {}
    wanted = {"osType": cfg.os_type, "hyperVGeneration": cfg.hyper_v_generation}
    # a definition written before hyperVGeneration existed is V1
    have = {"osType": props.get("osType"), "hyperVGeneration": props.get("hyperVGeneration", "V1")}
    differ = [f"{k} is {have[k]}, the connector's is {v}" for k, v in wanted.items()
              if str(have[k]).lower() != v.lower()]
    if differ:
        raise PlatformError(f"Azure: the image definition {gallery}/{name} does not fit this "
                            f"connector: {'; '.join(differ)}")
    return str(found["id"]), False


async def version_exists(arm: Arm, version: str) -> bool:
    return await _read_version(arm, version) is not None


async def version_source(arm: Arm, version: str) -> str | None:
    """The id of the disk the image version was made from (lower case); None when the version
    does not exist."""
    found = await _read_version(arm, version)
    if found is None:
        return None
    props = found.get("properties") or {}
    source = ((props.get("storageProfile") or {}).get("osDiskImage") or {}).get("source") or {}
    return str(source.get("id") or "").lower()


async def _read_version(arm: Arm, version: str) -> Any:
    cfg = arm.cfg
    assert isinstance(cfg, McsConfig)
    try:
        return await arm.call(lambda c: c.gallery_image_versions.get(
            cfg.resource_group, cfg.gallery, cfg.image_definition, version),
            f"reading the image version {version}")
    except AzureNotFoundError:
        return None


async def create_version(arm: Arm, version: str, disk_id: str) -> str:
    """Create the image version and wait until its provisioning state is Succeeded; its id."""
    cfg = arm.cfg
    assert isinstance(cfg, McsConfig)
    made = await arm.wait(lambda c: c.gallery_image_versions.begin_create_or_update(
        cfg.resource_group, cfg.gallery, cfg.image_definition, version,
        version_body(cfg, disk_id)), f"creating the image version {version}")
    state = (made.get("properties") or {}).get("provisioningState", "Succeeded")
    if state != "Succeeded":
        raise PlatformError(f"Azure: the image version {version} ended {state}")
    return str(made["id"])


async def delete_version(arm: Arm, gallery: str, definition: str, version: str) -> bool:
    """Delete the version once it is no longer being created; False when it did not exist."""
    rg = arm.cfg.resource_group
    if not await settled(arm, lambda c: c.gallery_image_versions.get(rg, gallery, definition,
                                                                     version),
                         f"the image version {version}"):
        return False
    try:
        await arm.wait(lambda c: c.gallery_image_versions.begin_delete(rg, gallery, definition,
                                                                       version),
                       f"deleting the image version {version}")
    except AzureNotFoundError:
        return False
    return True
