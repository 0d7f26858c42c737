"""Links to the Google Cloud console and the next step's wording.

The console's URL forms are not a documented API; these are the forms the console itself
uses (and tools such as Packer's and Terraform's users link to):
- an image's page: ``https://console.cloud.google.com/compute/imagesDetail/projects/P/global/images/NAME?project=P``
- the "Create an instance" form: ``https://console.cloud.google.com/compute/instancesAdd?project=P``
  (https://cloud.google.com/compute/docs/instances/create-start-instance#publicimage,
  "Create an instance" from the console). No documented query parameter preselects a custom
  image, so the next step names the image to pick as the boot disk.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

CONSOLE = "https://console.cloud.google.com"

NEXT_STEPS = (
    "Create a VM from the Google Cloud image {name} on the Google Cloud console, and power it "
    "on: open {create} and choose Boot disk > Change > Custom images > {name} (zone {zone}). "
    "The VM runs the scripts specified in the connector configuration; shut it down when it is "
    "in the desired state and the task changes to Done."
)


def image_page(project: str, name: str) -> str:
    return (f"{CONSOLE}/compute/imagesDetail/projects/{quote(project)}/global/images/"
            f"{quote(name)}?{urlencode({'project': project})}")


def create_instance_page(project: str) -> str:
    return f"{CONSOLE}/compute/instancesAdd?{urlencode({'project': project})}"


def next_steps(project: str, zone: str, name: str) -> str:
    return NEXT_STEPS.format(name=name, zone=zone, create=create_instance_page(project))
