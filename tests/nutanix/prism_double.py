"""A Prism Central v3 double (aiohttp, TLS, 127.0.0.1) shaped after the v3 Swagger extract and
recorded exchanges in ../shared/apis/nutanix/. It checks basic auth and what it receives
(the metadata kind, required spec fields, references to what exists, the qcow2 header and
virtual size of an uploaded file, ``spec_version`` on updates) and keeps state: clusters,
subnets, storage containers, images, VMs with their power state, and tasks that go
QUEUED -> RUNNING -> SUCCEEDED (or FAILED) over ``polls_to_done`` reads."""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
import struct
import uuid as uuids
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

API = "/api/nutanix/v3"
QCOW2_MAGIC = b"QFI\xfb"


def _error(status: int, reason: str, message: str, kind: str = "") -> web.Response:
    return web.json_response({"api_version": "3.1", "code": status, "kind": kind, "state": "ERROR",
                              "message_list": [{"reason": reason, "message": message}]},
                             status=status)


@dataclass
class Task:
    uuid: str
    operation: str
    entity: tuple[str, str]
    polls_left: int
    fail: str | None = None
    status: str = "QUEUED"


@dataclass
class PrismDouble:
    user: str
    password: str
    clusters: dict[str, str] = field(default_factory=dict)       # uuid -> name
    subnets: dict[str, str] = field(default_factory=dict)
    containers: dict[str, tuple[str, str]] = field(default_factory=dict)  # uuid -> (name, cluster)
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    vms: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    polls_to_done: int = 2
    #: operation ("create_vm", ...) -> the reads its tasks take instead of ``polls_to_done``
    polls_for: dict[str, int] = field(default_factory=dict)
    #: operation ("create_image", "create_vm", ...) -> the error_detail its next task fails with
    fail_task: dict[str, str] = field(default_factory=dict)
    #: (method, path regex, status, reason, message): answered once, in order
    faults: list[tuple[str, str, int, str, str]] = field(default_factory=list)
    #: close the connection after this many bytes of the next upload
    cut_upload_after: int | None = None
    uploads: list[tuple[str, int, int]] = field(default_factory=list)  # image, bytes, virtual size
    #: while set, VM listings wait for it (a watch round held open); ``held_lists`` counts them
    hold_lists: asyncio.Event | None = None
    held_lists: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    url: str = ""
    _runner: web.AppRunner | None = None

    # ------------------------------------------------------------ server
    async def start(self, tls: ssl.SSLContext) -> PrismDouble:
        app = web.Application(middlewares=[self._auth], client_max_size=1 << 20)
        r = app.router
        r.add_post(f"{API}/images", self._create_image)
        r.add_get(f"{API}/images/{{uuid}}", self._get_image)
        r.add_delete(f"{API}/images/{{uuid}}", self._delete_image)
        r.add_put(f"{API}/images/{{uuid}}/file", self._upload)
        r.add_post(f"{API}/vms", self._create_vm)
        r.add_get(f"{API}/vms/{{uuid}}", self._get_vm)
        r.add_put(f"{API}/vms/{{uuid}}", self._update_vm)
        r.add_delete(f"{API}/vms/{{uuid}}", self._delete_vm)
        r.add_post(f"{API}/{{kind}}s/list", self._list)
        r.add_post(f"{API}/groups", self._groups)
        r.add_get(f"{API}/tasks/{{uuid}}", self._get_task)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"https://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return _error(401, "AUTHENTICATION_REQUIRED", "Authentication required.")
        route = request.match_info.route.resource
        self.calls[f"{request.method} {route.canonical if route else request.path}"] += 1
        for i, (method, pattern, status, reason, message) in enumerate(self.faults):
            if method == request.method and re.search(pattern, request.path):
                del self.faults[i]
                return _error(status, reason, message)
        return await handler(request)  # type: ignore[no-any-return]

    # ------------------------------------------------------------ helpers
    def _task(self, operation: str, kind: str, uuid: str) -> str:
        task = Task(str(uuids.uuid4()), operation, (kind, uuid),
                    self.polls_for.get(operation, self.polls_to_done),
                    self.fail_task.pop(operation, None))
        self.tasks[task.uuid] = task
        return task.uuid

    def _accepted(self, entity: dict[str, Any], task: str) -> web.Response:
        return web.json_response({"api_version": "3.1", "metadata": entity["metadata"],
                                  "spec": entity["spec"],
                                  "status": {"state": "PENDING",
                                             "execution_context": {"task_uuid": task}}}, status=202)

    @staticmethod
    async def _body(request: web.Request, kind: str) -> dict[str, Any] | web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "DESERIALIZATION_FAILED", "the body is not JSON", kind)
        metadata, spec = body.get("metadata"), body.get("spec")
        if not isinstance(metadata, dict) or metadata.get("kind") != kind:
            return _error(422, "INVALID_REQUEST", f"metadata.kind must be {kind!r}", kind)
        if not isinstance(spec, dict) or not spec.get("name") or not isinstance(
                spec.get("resources"), dict):
            return _error(422, "MISSING_ATTRIBUTE", "spec.name and spec.resources are required", kind)
        return dict(body)

    def _ref(self, ref: Any, kind: str, known: dict[str, Any]) -> str | None:
        if not isinstance(ref, dict) or ref.get("kind") != kind or ref.get("uuid") not in known:
            return None
        return str(ref["uuid"])

    # ------------------------------------------------------------ images
    async def _create_image(self, request: web.Request) -> web.Response:
        body = await self._body(request, "image")
        if isinstance(body, web.Response):
            return body
        res = body["spec"]["resources"]
        if res.get("image_type") != "DISK_IMAGE":
            return _error(422, "INVALID_ARGUMENT", "resources.image_type must be DISK_IMAGE", "image")
        for ref in res.get("initial_placement_ref_list") or []:
            if self._ref(ref, "cluster", self.clusters) is None:
                return _error(422, "ENTITY_NOT_FOUND", f"cluster {ref!r} not found", "image")
        uuid = body["metadata"].get("uuid") or str(uuids.uuid4())
        if uuid in self.images:
            return _error(409, "ENTITY_ALREADY_EXISTS", f"image {uuid} already exists", "image")
        metadata = {"kind": "image", "uuid": uuid, "spec_version": 0}
        self.images[uuid] = {"metadata": metadata, "spec": body["spec"],
                             "status": {"state": "PENDING", "name": body["spec"]["name"],
                                        "resources": {"image_type": "DISK_IMAGE"}}}
        return self._accepted(self.images[uuid], self._task("create_image", "image", uuid))

    async def _get_image(self, request: web.Request) -> web.Response:
        image = self.images.get(request.match_info["uuid"])
        if image is None:
            return _error(404, "ENTITY_NOT_FOUND", f"image {request.match_info['uuid']} not found", "image")
        return web.json_response({"api_version": "3.1", **image})

    async def _delete_image(self, request: web.Request) -> web.Response:
        uuid = request.match_info["uuid"]
        if self.images.pop(uuid, None) is None:
            return _error(404, "ENTITY_NOT_FOUND", f"image {uuid} not found", "image")
        return web.json_response({"status": {"state": "DELETE_PENDING", "execution_context": {
            "task_uuid": self._task("delete_image", "image", uuid)}}}, status=202)

    async def _upload(self, request: web.Request) -> web.Response:
        uuid = request.match_info["uuid"]
        image = self.images.get(uuid)
        if image is None:
            return _error(404, "ENTITY_NOT_FOUND", f"image {uuid} not found", "image")
        if image["status"]["state"] != "COMPLETE" or "size_bytes" in image["status"]["resources"]:
            return _error(409, "INVALID_REQUEST", f"image {uuid} is not awaiting its file", "image")
        if request.content_type != "application/octet-stream":
            return _error(415, "INVALID_CONTENT_TYPE", "expected application/octet-stream", "image")
        declared = request.content_length
        head, received = b"", 0
        cut, self.cut_upload_after = self.cut_upload_after, None
        async for chunk in request.content.iter_chunked(1 << 16):
            if len(head) < 32:
                head += chunk[:32 - len(head)]
            received += len(chunk)
            if cut is not None and received >= cut:
                assert request.transport is not None
                request.transport.close()  # the connection drops mid-upload
                return web.Response(status=500)
        if declared is not None and received != declared:
            return _error(400, "INVALID_DATA_FORMAT", f"received {received} of {declared} bytes", "image")
        if head[:4] != QCOW2_MAGIC or len(head) < 32:
            return _error(400, "INVALID_DATA_FORMAT", "the file is not a qcow2 image", "image")
        version, virtual = struct.unpack(">I", head[4:8])[0], struct.unpack(">Q", head[24:32])[0]
        if version not in (2, 3) or virtual == 0 or virtual % 512:
            return _error(400, "INVALID_DATA_FORMAT",
                          f"qcow2 version {version}, virtual size {virtual}: not a disk", "image")
        image["status"]["resources"]["size_bytes"] = virtual
        self.uploads.append((uuid, received, virtual))
        return web.Response(status=200)

    # ------------------------------------------------------------ VMs
    async def _create_vm(self, request: web.Request) -> web.Response:
        body = await self._body(request, "vm")
        if isinstance(body, web.Response):
            return body
        spec = body["spec"]
        res = spec["resources"]
        problems = []
        if self._ref(spec.get("cluster_reference"), "cluster", self.clusters) is None:
            problems.append("spec.cluster_reference")
        disks = res.get("disk_list") or []
        size = 0
        for i, disk in enumerate(disks):
            source = self._ref(disk.get("data_source_reference"), "image", self.images)
            if source is None or "size_bytes" not in self.images[source]["status"]["resources"]:
                problems.append(f"disk_list[{i}].data_source_reference (no uploaded image)")
            else:
                size = self.images[source]["status"]["resources"]["size_bytes"]
            ref = ((disk.get("storage_config") or {}).get("storage_container_reference"))
            if self._ref(ref, "storage_container", self.containers) is None:
                problems.append(f"disk_list[{i}].storage_config.storage_container_reference")
        for i, nic in enumerate(res.get("nic_list") or []):
            if self._ref(nic.get("subnet_reference"), "subnet", self.subnets) is None:
                problems.append(f"nic_list[{i}].subnet_reference")
        if not disks:
            problems.append("disk_list (empty)")
        if res.get("power_state") not in ("ON", "OFF"):
            problems.append("resources.power_state")
        if (res.get("boot_config") or {}).get("boot_type") not in ("LEGACY", "UEFI", "SECURE_BOOT"):
            problems.append("resources.boot_config.boot_type")
        if problems:
            return _error(422, "INVALID_ARGUMENT", "invalid " + ", ".join(problems), "vm")
        uuid = body["metadata"].get("uuid") or str(uuids.uuid4())
        if uuid in self.vms:
            return _error(409, "ENTITY_ALREADY_EXISTS", f"vm {uuid} already exists", "vm")
        status_res = {**res, "disk_list": [{**d, "disk_size_bytes": size} for d in disks]}
        self.vms[uuid] = {"metadata": {"kind": "vm", "uuid": uuid, "spec_version": 0},
                          "spec": spec, "status": {"state": "PENDING", "name": spec["name"],
                                                   "resources": status_res}}
        return self._accepted(self.vms[uuid], self._task("create_vm", "vm", uuid))

    async def _get_vm(self, request: web.Request) -> web.Response:
        vm = self.vms.get(request.match_info["uuid"])
        if vm is None:
            return _error(404, "ENTITY_NOT_FOUND", f"vm {request.match_info['uuid']} not found", "vm")
        return web.json_response({"api_version": "3.1", **vm})

    async def _update_vm(self, request: web.Request) -> web.Response:
        uuid = request.match_info["uuid"]
        vm = self.vms.get(uuid)
        if vm is None:
            return _error(404, "ENTITY_NOT_FOUND", f"vm {uuid} not found", "vm")
        body = await self._body(request, "vm")
        if isinstance(body, web.Response):
            return body
        given, current = body["metadata"].get("spec_version"), vm["metadata"]["spec_version"]
        if given != current:
            return _error(409, "INVALID_ARGUMENT",
                          f"Given input spec_version {given} is older than {current}", "vm")
        vm["metadata"]["spec_version"] = current + 1
        vm["spec"] = body["spec"]
        self.power(uuid, body["spec"]["resources"].get("power_state", "OFF"))
        return self._accepted(vm, self._task("update_vm", "vm", uuid))

    async def _delete_vm(self, request: web.Request) -> web.Response:
        uuid = request.match_info["uuid"]
        if self.vms.pop(uuid, None) is None:
            return _error(404, "ENTITY_NOT_FOUND", f"vm {uuid} not found", "vm")
        return web.json_response({"status": {"state": "DELETE_PENDING", "execution_context": {
            "task_uuid": self._task("delete_vm", "vm", uuid)}}}, status=202)

    def power(self, uuid: str, state: str) -> None:
        """What an admin does in Prism (or the guest's own shutdown)."""
        vm = self.vms[uuid]
        vm["spec"]["resources"]["power_state"] = state
        vm["status"]["resources"]["power_state"] = state

    def add_vm(self, name: str, resources: dict[str, Any]) -> str:
        """A VM that already exists (a vm_template)."""
        uuid = str(uuids.uuid4())
        self.vms[uuid] = {"metadata": {"kind": "vm", "uuid": uuid, "spec_version": 0},
                          "spec": {"name": name, "resources": resources},
                          "status": {"state": "COMPLETE", "name": name, "resources": resources}}
        return uuid

    # ------------------------------------------------------------ lists, tasks
    async def _list(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        body = await request.json()
        if body.get("kind") != kind:
            return _error(422, "INVALID_REQUEST", f"kind must be {kind!r}", kind)
        wanted = set()
        for term in (body.get("filter") or "").split(","):
            attribute, _, value = term.partition("==")
            if attribute != {"vm": "vm_name", "cluster": "name", "subnet": "name"}.get(kind):
                return _error(400, "INVALID_REQUEST", f"unknown filter attribute {attribute!r}", kind)
            wanted.add(value)
        if kind == "vm" and self.hold_lists is not None:
            self.held_lists += 1
            await self.hold_lists.wait()
        if kind == "vm":
            found = [vm for vm in self.vms.values() if vm["spec"]["name"] in wanted]
        elif kind in ("cluster", "subnet"):
            names = self.clusters if kind == "cluster" else self.subnets
            found = [{"metadata": {"kind": kind, "uuid": u}, "spec": {"name": n},
                      "status": {"name": n}} for u, n in names.items() if n in wanted]
        else:
            return _error(404, "ENTITY_NOT_FOUND", f"no list of {kind}", kind)
        return web.json_response({"api_version": "3.1", "entities": found, "metadata": {
            "kind": kind, "total_matches": len(found), "length": len(found), "offset": 0}})

    async def _groups(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("entity_type") != "storage_container":
            return _error(422, "INVALID_REQUEST", "entity_type", "groups")
        name = str(body.get("filter_criteria", "")).removeprefix("container_name==")
        results = [{"entity_id": u, "data": [
            {"name": "container_name", "values": [{"values": [n]}]},
            {"name": "cluster", "values": [{"values": [c]}]}]}
            for u, (n, c) in self.containers.items() if n == name]
        return web.json_response({"group_results": [{"entity_results": results}],
                                  "filtered_entity_count": len(results)})

    async def _get_task(self, request: web.Request) -> web.Response:
        task = self.tasks.get(request.match_info["uuid"])
        if task is None:
            return _error(404, "ENTITY_NOT_FOUND", "task not found", "task")
        if task.status in ("QUEUED", "RUNNING"):
            task.polls_left -= 1
            task.status = "RUNNING"
            if task.polls_left <= 0:
                self._finish(task)
        body: dict[str, Any] = {"uuid": task.uuid, "status": task.status,
                                "operation_type": task.operation,
                                "entity_reference_list": [{"kind": task.entity[0],
                                                           "uuid": task.entity[1]}],
                                "percentage_complete": 100 if task.status == "SUCCEEDED" else 50}
        if task.status == "FAILED":
            body["error_detail"] = task.fail
        return web.json_response(body)

    def _finish(self, task: Task) -> None:
        kind, uuid = task.entity
        entity = (self.images if kind == "image" else self.vms).get(uuid)
        task.status = "FAILED" if task.fail else "SUCCEEDED"
        if entity is not None and entity["status"]["state"] == "PENDING":
            entity["status"]["state"] = "ERROR" if task.fail else "COMPLETE"
            if task.fail:
                entity["status"]["message_list"] = [{"reason": "INTERNAL_ERROR", "message": task.fail}]
