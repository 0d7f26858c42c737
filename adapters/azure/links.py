"""Azure portal links and the next-step wording (the seed's) of the two Azure targets."""

from __future__ import annotations

from urllib.parse import quote

from adapters.azure.azure_resources import AzurePublished

#: The portal opens a resource's blade at ``#@{tenant}/resource{resource id}`` (the form of
#: its own "Copy link"). There is no documented query parameter that preselects an image on
#: the create-VM window (``#create/Microsoft.VirtualMachine-ARM`` opens it empty), but an
#: image's and an image version's overview have "Create VM", which opens that window with
#: the image, its generation and its region filled in: the seed's half-filled window.
PORTAL_BLADE = "{portal}/#@{tenant}/resource{id}/overview"

NEXT_STEPS_IMAGE = (
    "Open the image {name} in the Azure portal and select Create VM: a window for creating a "
    "virtual machine opens, with the image filled in{size}. Enter the values required, finish "
    "creating the machine, and power it on. The machine runs the scripts specified in the "
    "connector configuration; when it shuts down (stopped or deallocated) the task changes "
    "to Done."
)
NEXT_STEPS_VERSION = (
    "The Azure Compute Gallery image version {name} is ready ({id}): use it as the master "
    "image of your MCS machine catalog."
)


def portal_link(portal: str, tenant: str, resource_id: str) -> str:
    return PORTAL_BLADE.format(portal=portal, tenant=quote(tenant, safe=""),
                               id=quote(resource_id, safe="/"))


def next_steps(published: AzurePublished, vm_size: str | None) -> str:
    if published.what == "image":
        size = f" (choose the size {vm_size})" if vm_size else ""
        return NEXT_STEPS_IMAGE.format(name=published.name, size=size)
    return NEXT_STEPS_VERSION.format(name=published.name, id=published.id)
