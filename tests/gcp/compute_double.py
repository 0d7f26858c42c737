"""A local double of the Compute Engine v1 REST API (aiohttp on 127.0.0.1, a random port),
shaped from Google's discovery document (/work/shared/apis/gcp/ holds the extract; the
Image schema's properties are copied into IMAGE_FIELDS below): images insert/get/delete,
globalOperations and zoneOperations get/wait, instances insert/list/get/delete/start/stop, disks
list. Operations go PENDING -> RUNNING -> DONE over polls; an image is PENDING until its
insert's operation is DONE (reading the image counts as a poll of it) and cannot be deleted
before (400 resourceNotReady). A repeated requestId gets the first insert's operation. It
*validates* what it receives (resource names, rawDisk.source, labels, enums, storage
locations, licenses, the requestId's UUID, unknown fields, the bearer token, and that the
object exists when given a storage check) and keeps state; ``fail_image`` makes the
next image operation end with an error, ``http_errors`` queues HTTP errors.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

SELF = "https://www.googleapis.com/compute/v1"
NAME = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
#: a region (europe-west1) or a multi-region (eu, us, asia)
STORAGE_LOCATION = re.compile(r"[a-z]+(?:-[a-z]+[0-9]+)?")
LICENSE = re.compile(r"(?:https://www\.googleapis\.com/compute/v1/)?projects/[a-z][-a-z0-9.:]*[a-z0-9]/"
                     r"global/licenses/[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
RAW_SOURCE = re.compile(r"https://storage\.googleapis\.com/([a-z0-9][a-z0-9._-]{1,220}[a-z0-9])/(.+)")
#: schemas.Image.properties of compute-v1-discovery-extract.json
IMAGE_FIELDS = {
    "architecture", "archiveSizeBytes", "creationTimestamp", "deprecated", "description",
    "diskSizeGb", "enableConfidentialCompute", "family", "guestOsFeatures", "id",
    "imageEncryptionKey", "kind", "labelFingerprint", "labels", "licenseCodes", "licenses",
    "name", "rawDisk", "satisfiesPzi", "satisfiesPzs", "selfLink",
    "shieldedInstanceInitialState", "sourceDisk", "sourceDiskEncryptionKey", "sourceDiskId",
    "sourceImage", "sourceImageEncryptionKey", "sourceImageId", "sourceSnapshot",
    "sourceSnapshotEncryptionKey", "sourceSnapshotId", "sourceType", "status",
    "storageLocations",
}
GUEST_OS_FEATURES = {
    "BARE_METAL_LINUX_COMPATIBLE", "BMSAI_CAPABLE", "CCA_CAPABLE", "GVNIC", "IDPF",
    "MULTI_IP_SUBNET", "SECURE_BOOT", "SEV_CAPABLE", "SEV_LIVE_MIGRATABLE",
    "SEV_LIVE_MIGRATABLE_V2", "SEV_SNP_CAPABLE", "SNP_SVSM_CAPABLE", "SUSPEND_SAFE_FPR",
    "TDX_CAPABLE", "UEFI_COMPATIBLE", "VIRTIO_SCSI_MULTIQUEUE", "WINDOWS",
}
#: an object check: (bucket, object) -> whether it exists (the storage emulator's)
ObjectExists = Callable[[str, str], Awaitable[bool]]


class Refused(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass
class Operation:
    name: str
    kind: str  # insert, delete, start, stop
    target: str  # selfLink of the target
    zone: str | None
    done: Callable[[], None]
    error: tuple[str, str, int] | None = None  # code, message, http status
    polls: int = 0
    status: str = "PENDING"

    def advance(self, to_done: int) -> None:
        if self.status == "DONE":
            return
        self.polls += 1
        self.status = "DONE" if self.polls >= to_done else "RUNNING"
        if self.status == "DONE" and self.error is None:
            self.done()

    def body(self, project: str) -> dict[str, Any]:
        where = f"zones/{self.zone}" if self.zone else "global"
        out: dict[str, Any] = {
            "kind": "compute#operation", "name": self.name, "id": str(abs(hash(self.name))),
            "operationType": self.kind, "status": self.status, "targetLink": self.target,
            "progress": {"PENDING": 0, "RUNNING": 50, "DONE": 100}[self.status],
            "selfLink": f"{SELF}/projects/{project}/{where}/operations/{self.name}"}
        if self.zone:
            out["zone"] = f"{SELF}/projects/{project}/zones/{self.zone}"
        if self.status == "DONE" and self.error is not None:
            code, message, status = self.error
            out["error"] = {"errors": [{"code": code, "message": message}]}
            out["httpErrorStatusCode"] = status
        return out


@dataclass
class ComputeDouble:
    project: str
    #: the bearer token every request must carry (None: anonymous)
    token: str | None = None
    #: gets of an operation until it is DONE (the first get shows RUNNING)
    polls_to_done: int = 3
    object_exists: ObjectExists | None = None
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    instances: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    disks: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, Operation] = field(default_factory=dict)
    #: (http method, path regex, status, reason, message): the next matching request fails
    http_errors: list[tuple[str, str, int, str, str]] = field(default_factory=list)
    #: the next image insert's operation ends with this error (code, message, http status)
    fail_image: tuple[str, str, int] | None = None
    #: (http method, path regex, gate): matching requests wait until the gate is set
    held: list[tuple[str, str, asyncio.Event]] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    received: list[tuple[str, str, Any]] = field(default_factory=list)
    _request_ids: dict[str, str] = field(default_factory=dict)
    #: image name -> the operation of the insert that makes it
    _image_ops: dict[str, Operation] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    url: str = ""

    # ------------------------------------------------------------ server
    async def start(self) -> ComputeDouble:
        app = web.Application(middlewares=[self._checks])
        base = "/compute/v1/projects/{project}"
        app.router.add_post(base + "/global/images", self._image_insert)
        app.router.add_get(base + "/global/images/{image}", self._image_get)
        app.router.add_delete(base + "/global/images/{image}", self._image_delete)
        for where in ("global", "zones/{zone}"):
            app.router.add_get(f"{base}/{where}/operations/{{operation}}", self._operation_get)
            app.router.add_post(f"{base}/{where}/operations/{{operation}}/wait",
                                self._operation_wait)
        app.router.add_post(base + "/zones/{zone}/instances", self._instance_insert)
        app.router.add_get(base + "/zones/{zone}/instances", self._instance_list)
        app.router.add_get(base + "/zones/{zone}/instances/{instance}", self._instance_get)
        app.router.add_delete(base + "/zones/{zone}/instances/{instance}", self._instance_delete)
        app.router.add_post(base + "/zones/{zone}/instances/{instance}/start", self._instance_start)
        app.router.add_post(base + "/zones/{zone}/instances/{instance}/stop", self._instance_stop)
        app.router.add_get(base + "/zones/{zone}/disks", self._disk_list)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _checks(self, request: web.Request, handler: Any) -> web.StreamResponse:
        route = request.match_info.route.resource
        self.calls[f"{request.method} {route.canonical if route else request.path}"] += 1
        try:
            if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
                raise Refused(401, "required", "Request is missing required authentication "
                                               "credential.")
            project = request.match_info.get("project")
            if project is not None and project != self.project:
                raise Refused(403, "forbidden", f"Required 'compute' permission for "
                                                f"'projects/{project}'")
            for method, pattern, gate in self.held:
                if method == request.method and re.search(pattern, request.path):
                    await gate.wait()
            for i, (method, pattern, status, reason, message) in enumerate(self.http_errors):
                if method == request.method and re.search(pattern, request.path):
                    del self.http_errors[i]
                    raise Refused(status, reason, message)
            return await handler(request)  # type: ignore[no-any-return]
        except Refused as exc:
            return web.json_response({"error": {"code": exc.status, "message": exc.message, "errors": [
                {"message": exc.message, "domain": "global", "reason": exc.reason}]}},
                status=exc.status)

    # ------------------------------------------------------------ helpers
    def _operation(self, kind: str, target: str, done: Callable[[], None], zone: str | None = None,
                   error: tuple[str, str, int] | None = None) -> Operation:
        op = Operation(f"operation-{next(self._ids)}-{kind}", kind, target, zone, done, error)
        self.operations[op.name] = op
        return op

    def image_link(self, name: str) -> str:
        return f"{SELF}/projects/{self.project}/global/images/{name}"

    def _image(self, name: str) -> dict[str, Any]:
        image = self.images.get(name)
        if image is None:
            raise Refused(404, "notFound", f"The resource 'projects/{self.project}/global/images/"
                                           f"{name}' was not found")
        return image

    @staticmethod
    def _check_request_id(value: str) -> None:
        """requestId: "a valid UUID with the exception that zero UUID is not supported"."""
        try:
            valid = uuid.UUID(value).int != 0 and len(value) == 36
        except ValueError:
            valid = False
        if not valid:
            raise Refused(400, "invalid", f"Invalid value for field 'requestId': '{value}'. "
                                          "Must be a valid UUID.")

    @staticmethod
    def _check_name(value: Any, what: str) -> None:
        if not isinstance(value, str) or NAME.fullmatch(value) is None:
            raise Refused(400, "invalid", f"Invalid value for field '{what}': '{value}'. Must be a "
                                          "match of regex '[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?'")

    # ------------------------------------------------------------ images
    async def _image_insert(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append(("images.insert", request.query.get("requestId", ""), body))
        rid = request.query.get("requestId")
        if rid is not None:
            self._check_request_id(rid)
        if rid and rid in self._request_ids:  # a repeated request: the first one's operation
            return web.json_response(self.operations[self._request_ids[rid]].body(self.project))
        unknown = sorted(set(body) - IMAGE_FIELDS)
        if unknown:
            raise Refused(400, "invalid", f"Invalid JSON payload received. Unknown name "
                                          f"\"{unknown[0]}\" at 'image_resource'")
        self._check_name(body.get("name"), "resource.name")
        if "family" in body:
            self._check_name(body["family"], "resource.family")
        source = (body.get("rawDisk") or {}).get("source")
        match = RAW_SOURCE.fullmatch(source or "")
        if match is None:
            raise Refused(400, "invalid", f"Invalid value for field 'resource.rawDisk.source': "
                                          f"'{source}'. The URL is malformed.")
        if self.object_exists is not None and not await self.object_exists(*match.groups()):
            raise Refused(400, "invalid", f"Invalid value for field 'resource.rawDisk.source': "
                                          f"'{source}'. The object does not exist.")
        for key, value in (body.get("labels") or {}).items():
            if LABEL_KEY.fullmatch(key) is None or LABEL_VALUE.fullmatch(str(value)) is None:
                raise Refused(400, "invalid", f"Invalid value for field 'resource.labels': "
                                              f"'{key}={value}'")
        for feature in body.get("guestOsFeatures") or []:
            if feature.get("type") not in GUEST_OS_FEATURES:
                raise Refused(400, "invalid", f"Invalid value for field "
                                              f"'resource.guestOsFeatures[].type': '{feature}'")
        if body.get("architecture", "X86_64") not in ("X86_64", "ARM64"):
            raise Refused(400, "invalid", "Invalid value for field 'resource.architecture'")
        locations = body.get("storageLocations") or []
        if len(locations) > 1:
            raise Refused(400, "invalid", "Only one storage location may be specified")
        for location in locations:
            if STORAGE_LOCATION.fullmatch(location) is None:
                raise Refused(400, "invalid", f"Invalid value for field 'resource.storageLocations[0]': "
                                              f"'{location}'")
        for i, license_url in enumerate(body.get("licenses") or []):
            if LICENSE.fullmatch(license_url) is None:
                raise Refused(400, "invalid", f"Invalid value for field 'resource.licenses[{i}]': "
                                              f"'{license_url}'")
        name = body["name"]
        if name in self.images:
            raise Refused(409, "alreadyExists", f"The resource 'projects/{self.project}/global/"
                                                f"images/{name}' already exists")
        image = {**body, "kind": "compute#image", "id": str(next(self._ids)), "status": "PENDING",
                 "selfLink": self.image_link(name), "creationTimestamp": _now()}
        self.images[name] = image
        error, self.fail_image = self.fail_image, None

        def ready() -> None:
            image["status"] = "READY"

        op = self._operation("insert", self.image_link(name), ready, error=error)
        if error is not None:
            image["status"] = "FAILED"
        self._image_ops[name] = op
        if rid:
            self._request_ids[rid] = op.name
        return web.json_response(op.body(self.project))

    async def _image_get(self, request: web.Request) -> web.Response:
        name = request.match_info["image"]
        image = self._image(name)
        creating = self._image_ops.get(name)
        if image["status"] == "PENDING" and creating is not None:
            creating.advance(self.polls_to_done)  # the image is made whether or not one polls
        return web.json_response(image)

    async def _image_delete(self, request: web.Request) -> web.Response:
        name = request.match_info["image"]
        image = self._image(name)
        if image["status"] == "PENDING":
            raise Refused(400, "resourceNotReady", f"The resource '{image['selfLink']}' is not "
                                                   "ready")
        op = self._operation("delete", image["selfLink"], lambda: self.images.pop(name, None))
        return web.json_response(op.body(self.project))

    # ------------------------------------------------------------ operations
    async def _operation_get(self, request: web.Request) -> web.Response:
        op = self.operations.get(request.match_info["operation"])
        if op is None or op.zone != request.match_info.get("zone"):
            raise Refused(404, "notFound", f"operation {request.match_info['operation']} not found")
        op.advance(self.polls_to_done)
        return web.json_response(op.body(self.project))

    async def _operation_wait(self, request: web.Request) -> web.Response:
        op = self.operations.get(request.match_info["operation"])
        if op is None:
            raise Refused(404, "notFound", "operation not found")
        while op.status != "DONE":
            op.advance(self.polls_to_done)
        return web.json_response(op.body(self.project))

    # ------------------------------------------------------------ instances and disks
    def _instance(self, zone: str, name: str) -> dict[str, Any]:
        inst = self.instances.get((zone, name))
        if inst is None:
            raise Refused(404, "notFound", f"The resource 'projects/{self.project}/zones/{zone}/"
                                           f"instances/{name}' was not found")
        return inst

    async def _instance_insert(self, request: web.Request) -> web.Response:
        zone = request.match_info["zone"]
        body = await request.json()
        self._check_name(body.get("name"), "resource.name")
        name = body["name"]
        if (zone, name) in self.instances:
            raise Refused(409, "alreadyExists", f"The resource 'projects/{self.project}/zones/"
                                                f"{zone}/instances/{name}' already exists")
        if not body.get("machineType"):
            raise Refused(400, "required", "Required field 'resource.machineType' not specified")
        boots = [d for d in body.get("disks") or [] if d.get("boot")]
        if len(boots) != 1:
            raise Refused(400, "invalid", "Exactly one boot disk must be specified")
        source = (boots[0].get("initializeParams") or {}).get("sourceImage", "")
        image_name = source.rstrip("/").rsplit("/", 1)[-1]
        if not re.fullmatch(rf"(?:{re.escape(SELF)}/)?projects/{self.project}/global/images/"
                            rf"{re.escape(image_name)}", source):
            raise Refused(400, "invalid", f"Invalid value for field "
                                          f"'resource.disks[0].initializeParams.sourceImage': '{source}'")
        image = self._image(image_name)
        if image["status"] != "READY":
            raise Refused(400, "resourceNotReady", f"The resource '{image['selfLink']}' is not ready")
        link = f"{SELF}/projects/{self.project}/zones/{zone}/instances/{name}"
        disk_link = f"{SELF}/projects/{self.project}/zones/{zone}/disks/{name}"
        self.disks[(zone, name)] = {"kind": "compute#disk", "name": name, "selfLink": disk_link,
                                    "sourceImage": image["selfLink"], "users": [link],
                                    "zone": f"{SELF}/projects/{self.project}/zones/{zone}"}
        inst = {"kind": "compute#instance", "name": name, "id": str(next(self._ids)),
                "status": "PROVISIONING", "selfLink": link, "machineType": body["machineType"],
                "zone": f"{SELF}/projects/{self.project}/zones/{zone}",
                "disks": [{"boot": True, "source": disk_link, "deviceName": name, "index": 0}]}
        self.instances[(zone, name)] = inst
        op = self._operation("insert", link, lambda: self._set_status(inst, "RUNNING"), zone)
        return web.json_response(op.body(self.project))

    @staticmethod
    def _set_status(inst: dict[str, Any], status: str) -> None:
        inst["status"] = status
        inst["lastStartTimestamp" if status == "RUNNING" else "lastStopTimestamp"] = _now()

    async def _instance_get(self, request: web.Request) -> web.Response:
        return web.json_response(self._instance(request.match_info["zone"],
                                                request.match_info["instance"]))

    async def _instance_delete(self, request: web.Request) -> web.Response:
        zone, name = request.match_info["zone"], request.match_info["instance"]
        inst = self._instance(zone, name)

        def gone() -> None:  # the boot disk is auto-deleted with it
            self.instances.pop((zone, name), None)
            self.disks.pop((zone, name), None)

        op = self._operation("delete", inst["selfLink"], gone, zone)
        return web.json_response(op.body(self.project))

    async def _instance_start(self, request: web.Request) -> web.Response:
        inst = self._instance(request.match_info["zone"], request.match_info["instance"])
        op = self._operation("start", inst["selfLink"], lambda: self._set_status(inst, "RUNNING"),
                             request.match_info["zone"])
        return web.json_response(op.body(self.project))

    async def _instance_stop(self, request: web.Request) -> web.Response:
        inst = self._instance(request.match_info["zone"], request.match_info["instance"])
        inst["status"] = "STOPPING"
        op = self._operation("stop", inst["selfLink"], lambda: self._set_status(inst, "TERMINATED"),
                             request.match_info["zone"])
        return web.json_response(op.body(self.project))

    @staticmethod
    def _filtered(items: list[dict[str, Any]], expression: str | None) -> list[dict[str, Any]]:
        """Compute's list filter, the one form the adapter uses: FIELD eq "RE2 regex" (the
        regex matches the whole value)."""
        if not expression:
            return items
        match = re.fullmatch(r'\s*(\w+)\s+eq\s+"(.*)"\s*', expression)
        if match is None:
            raise Refused(400, "invalid", f"Invalid list filter expression '{expression}'")
        key, pattern = match.groups()
        regex = re.compile(pattern)
        return [i for i in items if regex.fullmatch(str(i.get(key, "")))]

    async def _instance_list(self, request: web.Request) -> web.Response:
        zone = request.match_info["zone"]
        items = self._filtered([i for (z, _), i in self.instances.items() if z == zone],
                               request.query.get("filter"))
        return web.json_response({"kind": "compute#instanceList", "items": items})

    async def _disk_list(self, request: web.Request) -> web.Response:
        zone = request.match_info["zone"]
        items = self._filtered([d for (z, _), d in self.disks.items() if z == zone],
                               request.query.get("filter"))
        return web.json_response({"kind": "compute#diskList", "items": items})
