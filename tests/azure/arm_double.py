"""A local double of Azure Resource Manager (Microsoft.Compute) and of the Entra token
endpoint, over TLS, shaped from Azure's published examples (/work/shared/apis/azure/).

It validates what it receives (api-version per resource provider, bearer token, required
fields, upload sizes), keeps state (disks, images, gallery definitions and versions, VMs),
implements ARM's long-running operations (201/202 with ``Azure-AsyncOperation`` and
``Location``, polled until Succeeded or Failed; lro-notes.md) and gives a disk's write SAS
pointing at a page blob it made in Azurite. Faults are injected per test: throttling (429
with Retry-After) and operations that end Failed.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import re
import secrets
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

MIB = 1 << 20
#: api-versions per resource provider: the published examples' and azure-mgmt-compute's
API_VERSIONS = {
    "disks": {"2025-01-02", "2026-03-02"},
    "images": {"2025-04-01", "2026-04-01"},
    "virtualMachines": {"2025-04-01", "2026-04-01"},
    "galleries": {"2024-03-03", "2026-03-03"},
}
_ARM = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Compute/"
    r"(?P<rest>.+)$", re.I)
_LIST_ALL = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.Compute/virtualMachines$",
                       re.I)
_OPERATION = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.Compute/locations/"
                        r"(?P<loc>[^/]+)/operations/(?P<op>[^/]+)$", re.I)


class ArmFault(Exception):
    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    def response(self) -> web.Response:
        return web.json_response({"error": {"code": self.code, "message": self.message}},
                                 status=self.status, headers=self.headers)


@dataclass
class Operation:
    id: str
    #: status polls still answered InProgress
    polls_left: int
    #: run when it completes: the final body (None: none), or an ArmFault: it ends Failed
    finish: Callable[[], Awaitable[dict[str, Any] | None]]
    status: str = "InProgress"
    result: dict[str, Any] | None = None
    error: ArmFault | None = None

    async def step(self) -> None:
        if self.status != "InProgress":
            return
        if self.polls_left > 0:
            self.polls_left -= 1
            return
        try:
            self.result = await self.finish()
            self.status = "Succeeded"
        except ArmFault as fault:
            self.error, self.status = fault, "Failed"


@dataclass
class Throttle:
    method: str
    kind: str
    times: int
    retry_after: int


@dataclass
class Injected:
    """The next ``times`` requests ``method`` on ``kind`` are answered with ``fault``."""

    method: str
    kind: str
    fault: ArmFault
    times: int = 1


@dataclass
class Blobs:
    """Where disks' page blobs live: Azurite's account and a container of the double's."""

    account_url: str
    account_name: str
    account_key: str
    container: str = "disks"
    #: where the disks' SAS URLs lead, when not straight to Azurite (a test's counting proxy)
    sas_account_url: str = ""

    async def create(self, name: str, size: int) -> None:
        """Make the disk's empty page blob."""
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob.aio import BlobServiceClient

        async with BlobServiceClient(self.account_url, credential={
                "account_name": self.account_name, "account_key": self.account_key}) as service:
            container = service.get_container_client(self.container)
            if not await container.exists():
                # two disks made at once both find no container: the second's create loses
                with contextlib.suppress(ResourceExistsError):
                    await container.create_container()
            await container.get_blob_client(name).create_page_blob(size)

    async def create_sas(self, name: str, write: bool = True) -> str:
        """A SAS URL of the blob: read/write, or read only."""
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        sas = generate_blob_sas(self.account_name, self.container, name,
                                account_key=self.account_key,
                                permission=BlobSasPermissions(read=True, write=write),
                                expiry=datetime.now(UTC) + timedelta(hours=1))
        return f"{self.sas_account_url or self.account_url}/{self.container}/{name}?{sas}"

    async def delete(self, name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.blob.aio import BlobServiceClient

        async with BlobServiceClient(self.account_url, credential={
                "account_name": self.account_name, "account_key": self.account_key}) as service:
            with contextlib.suppress(ResourceNotFoundError):
                await service.get_blob_client(self.container, name).delete_blob()


@dataclass
class ArmDouble:
    subscription_id: str
    tenant_id: str
    client_id: str
    client_secret: str
    location: str
    blobs: Blobs | None = None
    #: a token accepted without the token endpoint (tests with a static credential)
    static_token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    #: status polls an operation answers InProgress before it completes
    lro_polls: int = 1
    #: kind (images, versions...) -> its own count of InProgress answers
    lro_polls_of: dict[str, int] = field(default_factory=dict)
    base_url: str = ""
    #: tokens the token endpoint issued -> their audience (the scope without /.default)
    tokens: dict[str, str] = field(default_factory=dict)
    token_requests: int = 0
    disks: dict[str, dict[str, Any]] = field(default_factory=dict)
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    galleries: set[str] = field(default_factory=set)
    definitions: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    vms: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, Operation] = field(default_factory=dict)
    #: resource id (lower case) -> the operation creating it: a GET of the resource advances
    #: it, as time passing does in Azure (a cancelled client no longer polls the operation)
    creating: dict[str, Operation] = field(default_factory=dict)
    #: (method, kind) of every ARM request, for tests counting calls (VM listings...)
    requests: list[tuple[str, str]] = field(default_factory=list)
    throttles: list[Throttle] = field(default_factory=list)
    injected: list[Injected] = field(default_factory=list)
    #: kind -> the fault its next long-running operation ends with
    failures: dict[str, ArmFault] = field(default_factory=dict)
    _ops: itertools.count[int] = field(default_factory=itertools.count)

    # ------------------------------------------------------------ injection
    def throttle(self, method: str, kind: str, times: int = 1, retry_after: int = 1) -> None:
        self.throttles.append(Throttle(method, kind, times, retry_after))

    def refuse(self, method: str, kind: str, status: int, code: str, message: str,
               times: int = 1) -> None:
        """Answer the next ``times`` requests with Azure's error ``code`` (AuthorizationFailed,
        Conflict, OperationNotAllowed, QuotaExceeded...)."""
        self.injected.append(Injected(method, kind, ArmFault(status, code, message), times))

    def fail_next(self, kind: str, code: str, message: str) -> None:
        self.failures[kind] = ArmFault(400, code, message)

    def count(self, method: str, kind: str) -> int:
        return sum(1 for m, k in self.requests if m == method and k == kind)

    # ------------------------------------------------------------ server
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors])
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self._openid)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_route("*", "/subscriptions/{tail:.*}", self._arm)
        return app

    @web.middleware
    async def _errors(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        try:
            return await handler(request)
        except ArmFault as fault:
            return fault.response()

    async def _openid(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        return web.json_response({
            "issuer": f"{self.base_url}/{tenant}/v2.0",
            "token_endpoint": f"{self.base_url}/{tenant}/oauth2/v2.0/token",
            "authorization_endpoint": f"{self.base_url}/{tenant}/oauth2/v2.0/authorize"})

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = await request.post()
        tenant = request.match_info["tenant"]
        if tenant != self.tenant_id:
            return web.json_response({"error": "invalid_request", "error_description":
                                      f"AADSTS90002: Tenant '{tenant}' not found."}, status=400)
        if form.get("grant_type") != "client_credentials" or not form.get("scope"):
            return web.json_response({"error": "invalid_request", "error_description":
                                      "AADSTS900144: grant_type and scope are required"}, status=400)
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return web.json_response({"error": "invalid_client", "error_description":
                                      "AADSTS7000215: Invalid client secret provided. Ensure the "
                                      "secret being sent in the request is the client secret "
                                      "value, not the client secret ID."}, status=401)
        scope = str(form["scope"])
        if not scope.endswith("/.default") or not scope.startswith("https://"):
            return web.json_response({"error": "invalid_scope", "error_description":
                                      f"AADSTS70011: The provided request must include a 'scope' "
                                      f"input parameter. The provided value for the input "
                                      f"parameter 'scope' is not valid: {scope!r}."}, status=400)
        token = secrets.token_urlsafe(24)
        self.tokens[token] = scope.removesuffix("/.default")
        return web.json_response({"token_type": "Bearer", "expires_in": 3600,
                                  "ext_expires_in": 3600, "access_token": token})

    def _authorize(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ")
        challenge = {"WWW-Authenticate": f'Bearer authorization_uri="{self.base_url}/'
                                         f'{self.tenant_id}", error="invalid_token"'}
        if not header.startswith("Bearer ") or (token not in self.tokens
                                                and token != self.static_token):
            raise ArmFault(401, "InvalidAuthenticationToken", "The access token is invalid.",
                           challenge)
        audience = self.tokens.get(token, self.base_url)
        if audience.rstrip("/") != self.base_url:
            raise ArmFault(401, "InvalidAuthenticationToken",
                           f"The access token has been obtained for wrong audience or resource "
                           f"'{audience}'. It should exactly match with one of the allowed "
                           f"audiences '{self.base_url}/','{self.base_url}'.", challenge)

    async def _arm(self, request: web.Request) -> web.StreamResponse:
        self._authorize(request)
        path = request.path
        op = _OPERATION.match(path)
        if op:  # a long-running operation's status: throttled as any read
            self.requests.append((request.method, "operations"))
            self._throttled(request.method, "operations")
            return await self._operation(request, op["op"])
        every = _LIST_ALL.match(path)
        if every and request.method == "GET" and every["sub"] == self.subscription_id:
            if request.query.get("api-version") not in API_VERSIONS["virtualMachines"]:
                raise ArmFault(400, "InvalidApiVersionParameter", "bad api-version")
            self.requests.append(("GET", "virtualMachines"))
            self._throttled("GET", "virtualMachines")
            status = request.query.get("statusOnly") == "true"
            return web.json_response({"value": [self._vm_view(vm, status)
                                                for vm in self.vms.values()]})
        match = _ARM.match(path)
        if not match:
            raise ArmFault(404, "InvalidResourceType", f"no resource type at {path}")
        if match["sub"] != self.subscription_id:
            raise ArmFault(404, "SubscriptionNotFound",
                           f"The subscription '{match['sub']}' could not be found.")
        parts = match["rest"].split("/")
        kind = parts[0]
        if kind not in API_VERSIONS:
            raise ArmFault(400, "InvalidResourceType", f"The resource type '{kind}' is not known")
        version = request.query.get("api-version")
        if version not in API_VERSIONS[kind]:
            raise ArmFault(400, "InvalidApiVersionParameter",
                           f"The api-version '{version}' is invalid. The supported versions are "
                           f"'{', '.join(sorted(API_VERSIONS[kind]))}'.")
        label = kind if kind != "galleries" else {2: "galleries", 3: "galleries", 4: "definitions",
                                                  5: "definitions", 6: "versions",
                                                  7: "versions"}.get(len(parts), "galleries")
        self.requests.append((request.method, label))
        self._throttled(request.method, label)
        body: dict[str, Any] = {}
        if request.method in ("PUT", "POST") and request.can_read_body:
            body = await request.json()
        rg = match["rg"]
        handler = {"disks": self._disks, "images": self._images,
                   "virtualMachines": self._vms, "galleries": self._galleries}[kind]
        return await handler(request, rg, parts[1:], body)

    def _throttled(self, method: str, kind: str) -> None:
        for injected in self.injected:
            if injected.times > 0 and injected.method == method and injected.kind == kind:
                injected.times -= 1
                raise injected.fault
        for throttle in self.throttles:
            if throttle.times > 0 and throttle.method == method and throttle.kind == kind:
                throttle.times -= 1
                operation = "Read" if method == "GET" else "Write"
                raise ArmFault(429, "TooManyRequests",
                               "The request is being throttled as the limit has been reached for "
                               f"operation type - {operation}. For more information, see "
                               "https://aka.ms/throttling",
                               {"Retry-After": str(throttle.retry_after)})

    # ------------------------------------------------------------ LRO
    def _id(self, rg: str, *parts: str) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{rg}/providers/"
                f"Microsoft.Compute/{'/'.join(parts)}")

    def _start(self, kind: str, finish: Callable[[], Awaitable[dict[str, Any] | None]]) -> Operation:
        op_id = f"op-{next(self._ops)}-{secrets.token_hex(4)}"
        failure = self.failures.pop(kind, None)

        async def ending() -> dict[str, Any] | None:
            if failure is not None:
                raise failure
            return await finish()

        op = self.operations[op_id] = Operation(op_id, self.lro_polls_of.get(kind, self.lro_polls),
                                                 ending)
        return op

    def _op_headers(self, op: Operation, version: str) -> dict[str, str]:
        url = (f"{self.base_url}/subscriptions/{self.subscription_id}/providers/Microsoft.Compute/"
               f"locations/{self.location}/operations/{op.id}?api-version={version}")
        return {"Azure-AsyncOperation": url, "Location": url + "&monitor=true"}

    def _accepted(self, request: web.Request, kind: str,
                  finish: Callable[[], Awaitable[dict[str, Any] | None]]) -> web.Response:
        """A POST action or a DELETE: 202, no body, both headers."""
        op = self._start(kind, finish)
        return web.Response(status=202, headers=self._op_headers(op, request.query["api-version"]))

    def _creating(self, request: web.Request, kind: str, store: dict[str, dict[str, Any]],
                  key: str, resource: dict[str, Any],
                  then: Callable[[], Awaitable[None]] | None = None,
                  status: int = 201) -> web.Response:
        """A PUT create: 201 (disks: 202, as Disk_Create_UploadDisk.json) with the resource
        ``Creating``; Succeeded (or Failed) once its operation completes."""
        resource["properties"]["provisioningState"] = "Creating"
        store[key] = resource

        async def finish() -> dict[str, Any] | None:
            if then is not None:
                await then()
            resource["properties"]["provisioningState"] = "Succeeded"
            return None

        op = self._start(kind, finish)
        op_failed = op.finish

        async def finish_or_mark() -> dict[str, Any] | None:
            try:
                return await op_failed()
            except ArmFault:
                resource["properties"]["provisioningState"] = "Failed"
                raise

        op.finish = finish_or_mark
        self.creating[resource["id"].lower()] = op
        return web.json_response(resource, status=status,
                                 headers=self._op_headers(op, request.query["api-version"]))

    async def _read(self, resource: dict[str, Any]) -> web.Response:
        """A GET of a resource: its creation moves on (time passes), then its state."""
        op = self.creating.get(resource["id"].lower())
        if op is not None:
            await op.step()
            if op.status != "InProgress":
                self.creating.pop(resource["id"].lower(), None)
        return web.json_response(resource)

    @staticmethod
    def _refuse_busy(resource: dict[str, Any], kind: str, code: str = "OperationNotAllowed") -> None:
        """Azure answers 409 to a DELETE of a resource still being created or updated."""
        state = resource["properties"].get("provisioningState")
        if state in ("Creating", "Updating"):
            raise ArmFault(409, code, f"Operation 'Delete' is not allowed on {kind} "
                           f"'{resource['name']}' since its provisioning state is {state}.")

    async def _operation(self, request: web.Request, op_id: str) -> web.Response:
        op = self.operations.get(op_id)
        if op is None:
            raise ArmFault(404, "NotFound", f"operation {op_id} not found")
        await op.step()
        if request.query.get("monitor") == "true":  # the Location URL
            if op.status == "InProgress":
                return web.Response(status=202, headers=self._op_headers(
                    op, request.query.get("api-version", "")))
            if op.error is not None:
                return op.error.response()
            return web.json_response(op.result) if op.result is not None \
                else web.Response(status=200)
        status: dict[str, Any] = {"name": op.id, "status": op.status,
                                  "startTime": datetime.now(UTC).isoformat()}
        if op.error is not None:
            status["error"] = {"code": op.error.code, "message": op.error.message}
        return web.json_response(status)

    # ------------------------------------------------------------ disks
    async def _disks(self, request: web.Request, rg: str, rest: list[str],
                     body: dict[str, Any]) -> web.StreamResponse:
        name = rest[0] if rest else ""
        key = f"{rg}/{name}".lower()
        disk = self.disks.get(key)
        if len(rest) == 2 and request.method == "POST":
            if disk is None:
                raise _not_found("disks", name)
            return await self._disk_action(request, disk, rest[1], body)
        if request.method == "GET":
            if disk is None:
                raise _not_found("disks", name)
            return await self._read(disk)
        if request.method == "DELETE":
            if disk is None:
                return web.Response(status=204)
            self._refuse_busy(disk, "disk")
            if disk["properties"]["diskState"] in ("ActiveUpload", "ActiveSAS"):
                raise ArmFault(409, "OperationNotAllowed", f"Disk {name} is in state "
                               f"{disk['properties']['diskState']}: revoke its access first.")

            async def deleted() -> None:
                self.disks.pop(key, None)
                if self.blobs is not None:
                    await self.blobs.delete(_blob_name(disk))
                return None
            return self._accepted(request, "disks", deleted)
        if request.method != "PUT":
            raise ArmFault(405, "MethodNotAllowed", request.method)
        if disk is not None:
            raise ArmFault(409, "Conflict", f"Disk {name} exists; this double does not update disks")
        _require(body, "location", "properties.creationData.createOption")
        creation = body["properties"]["creationData"]
        if creation["createOption"] != "Upload":
            raise ArmFault(400, "InvalidParameter", "this double makes Upload disks only")
        size = creation.get("uploadSizeBytes")
        if not isinstance(size, int) or size % 512 or (size - 512) % MIB or size < 20 * MIB + 512:
            raise ArmFault(400, "InvalidParameter",
                           f"The value '{size}' of parameter 'uploadSizeBytes' is invalid: it must "
                           "be a whole number of MiB plus 512 bytes, at least 20 MiB + 512.",)
        sku = (body.get("sku") or {}).get("name", "Standard_LRS")
        resource = {"id": self._id(rg, "disks", name), "name": name,
                    "type": "Microsoft.Compute/disks", "location": body["location"],
                    "tags": body.get("tags") or {}, "sku": {"name": sku},
                    "properties": {**body["properties"], "diskState": "ReadyToUpload",
                                   "diskSizeGB": -(-(size - 512) // (1 << 30))}}

        async def made() -> None:
            if self.blobs is not None:
                await self.blobs.create(_blob_name(resource), size)
        return self._creating(request, "disks", self.disks, key, resource, made, status=202)

    async def _disk_action(self, request: web.Request, disk: dict[str, Any], action: str,
                           body: dict[str, Any]) -> web.Response:
        props = disk["properties"]
        if action == "beginGetAccess":
            _require(body, "access", "durationInSeconds")
            # an upload disk takes writes until revoked; a closed one can be read (export)
            allowed = {"Write": ("ReadyToUpload", "ActiveUpload"), "Read": ("Unattached",)}
            if props["diskState"] not in allowed.get(body["access"], ()):
                raise ArmFault(409, "OperationNotAllowed",
                               f"Disk {disk['name']} in state {props['diskState']} cannot be "
                               f"opened for {body['access']}")
            write = body["access"] == "Write"

            async def granted() -> dict[str, Any]:
                props["diskState"] = "ActiveUpload" if write else "ActiveSAS"
                if self.blobs is None:
                    return {"accessSAS": f"https://127.0.0.1:1/no-blob/{disk['name']}?sig=x"}
                # a new SAS for the same blob (the page blob was made with the disk)
                return {"accessSAS": await self.blobs.create_sas(_blob_name(disk), write)}
            return self._accepted(request, "disks", granted)
        if action == "endGetAccess":
            async def revoked() -> None:
                if props["diskState"] in ("ActiveUpload", "ActiveSAS"):
                    props["diskState"] = "Unattached"
                return None
            return self._accepted(request, "disks", revoked)
        raise ArmFault(400, "InvalidAction", action)

    # ------------------------------------------------------------ images
    async def _images(self, request: web.Request, rg: str, rest: list[str],
                      body: dict[str, Any]) -> web.StreamResponse:
        name = rest[0]
        key = f"{rg}/{name}".lower()
        if request.method == "GET":
            if key not in self.images:
                raise _not_found("images", name)
            return await self._read(self.images[key])
        if request.method == "DELETE":
            if key not in self.images:
                return web.Response(status=204)
            self._refuse_busy(self.images[key], "image")

            async def deleted() -> None:
                self.images.pop(key, None)
            return self._accepted(request, "images", deleted)
        _require(body, "location", "properties.storageProfile.osDisk.osType",
                 "properties.storageProfile.osDisk.osState")
        os_disk = body["properties"]["storageProfile"]["osDisk"]
        disk_id = (os_disk.get("managedDisk") or {}).get("id")
        disk = self.disks.get(_rg_name(disk_id)) if disk_id else None
        if disk is None or disk["properties"]["diskState"] != "Unattached":
            state = disk["properties"]["diskState"] if disk else "missing"
            raise ArmFault(409 if disk else 404, "OperationNotAllowed" if disk else "NotFound",
                           f"The source disk {disk_id} is {state}: it must exist, uploaded "
                           "and with its access revoked")
        if os_disk["osState"] not in ("Generalized", "Specialized"):
            raise ArmFault(400, "InvalidParameter", f"osState {os_disk['osState']!r}")
        resource = {"id": self._id(rg, "images", name), "name": name,
                    "type": "Microsoft.Compute/images", "location": body["location"],
                    "tags": body.get("tags") or {}, "properties": body["properties"]}
        return self._creating(request, "images", self.images, key, resource)

    # ------------------------------------------------------------ galleries
    async def _galleries(self, request: web.Request, rg: str, rest: list[str],
                         body: dict[str, Any]) -> web.StreamResponse:
        gallery = rest[0]
        if f"{rg}/{gallery}".lower() not in self.galleries:
            raise ArmFault(404, "ResourceNotFound", f"The Resource 'Microsoft.Compute/galleries/"
                           f"{gallery}' under resource group '{rg}' was not found.")
        if len(rest) < 3 or rest[1] != "images":
            raise ArmFault(400, "InvalidResourceType", "this double serves definitions and versions")
        definition = rest[2]
        dkey = f"{rg}/{gallery}/{definition}".lower()
        if len(rest) == 3:
            if request.method == "GET":
                if dkey not in self.definitions:
                    raise ArmFault(404, "GalleryImageNotFound",
                                   f"The gallery image {definition} was not found")
                return await self._read(self.definitions[dkey])
            _require(body, "location", "properties.osType", "properties.osState",
                     "properties.identifier.publisher", "properties.identifier.offer",
                     "properties.identifier.sku")
            resource = {"id": self._id(rg, "galleries", gallery, "images", definition),
                        "name": definition, "type": "Microsoft.Compute/galleries/images",
                        "location": body["location"], "tags": body.get("tags") or {},
                        "properties": {"hyperVGeneration": "V1", **body["properties"]}}
            return self._creating(request, "definitions", self.definitions, dkey, resource)
        version = rest[4]
        vkey = f"{dkey}/{version}".lower()
        if request.method == "GET":
            if vkey not in self.versions:
                raise ArmFault(404, "ResourceNotFound", f"The image version {version} was not found")
            return await self._read(self.versions[vkey])
        if request.method == "DELETE":
            if vkey not in self.versions:
                return web.Response(status=204)
            self._refuse_busy(self.versions[vkey], "gallery image version", "Conflict")

            async def deleted() -> None:
                self.versions.pop(vkey, None)
            return self._accepted(request, "versions", deleted)
        if dkey not in self.definitions:
            raise ArmFault(404, "GalleryImageNotFound", f"The gallery image {definition} was not found")
        if not re.fullmatch(r"\d+\.\d+\.\d+", version) or any(
                int(p) > 2**31 - 1 for p in version.split(".")):
            raise ArmFault(400, "InvalidParameter", f"The gallery image version name '{version}' "
                           "is invalid: it must be major.minor.patch of 32-bit integers")
        _require(body, "location", "properties.storageProfile.osDiskImage.source.id",
                 "properties.publishingProfile.targetRegions")
        source = body["properties"]["storageProfile"]["osDiskImage"]["source"]["id"]
        existing = self.versions.get(vkey)
        if existing is not None and _version_source(existing).lower() != source.lower():
            # a version's source is fixed once made: a PUT may repeat it, never change it
            raise ArmFault(409, "PropertyChangeNotAllowed", "Changing property "
                           "'galleryImageVersion.properties.storageProfile.osDiskImage.source.id' "
                           "is not allowed.")
        disk = self.disks.get(_rg_name(source))
        if disk is None or disk["properties"]["diskState"] != "Unattached":
            raise ArmFault(409, "OperationNotAllowed",
                           f"The source disk {source} must exist, uploaded, with its access revoked")
        resource = {"id": self._id(rg, "galleries", gallery, "images", definition, "versions",
                                   version),
                    "name": version, "type": "Microsoft.Compute/galleries/images/versions",
                    "location": body["location"], "tags": body.get("tags") or {},
                    "properties": body["properties"]}
        return self._creating(request, "versions", self.versions, vkey, resource)

    # ------------------------------------------------------------ VMs
    async def _vms(self, request: web.Request, rg: str, rest: list[str],
                   body: dict[str, Any]) -> web.StreamResponse:
        if not rest:  # the list
            expand = request.query.get("$expand")
            values = [self._vm_view(vm, expand == "instanceView")
                      for key, vm in self.vms.items() if key.startswith(f"{rg.lower()}/")]
            return web.json_response({"value": values})
        name = rest[0]
        key = f"{rg}/{name}".lower()
        vm = self.vms.get(key)
        if len(rest) == 2:
            if vm is None:
                raise _not_found("virtualMachines", name)
            if rest[1] == "instanceView" and request.method == "GET":
                return web.json_response(self._instance_view(vm))
            power = {"start": "running", "powerOff": "stopped", "deallocate": "deallocated"}
            if request.method == "POST" and rest[1] in power:
                async def changed() -> None:
                    vm["_power"] = power[rest[1]]
                return self._accepted(request, "virtualMachines", changed)
            raise ArmFault(400, "InvalidAction", rest[1])
        if request.method == "GET":
            if vm is None:
                raise _not_found("virtualMachines", name)
            return web.json_response(self._vm_view(vm, False))
        _require(body, "location", "properties.storageProfile.imageReference.id",
                 "properties.hardwareProfile.vmSize")
        image_id = body["properties"]["storageProfile"]["imageReference"]["id"]
        if _rg_name(image_id) not in self.images and not any(
                v["id"].lower() == image_id.lower() for v in self.versions.values()):
            raise ArmFault(404, "NotFound", f"The image {image_id} was not found")
        resource = {"id": self._id(rg, "virtualMachines", name), "name": name,
                    "type": "Microsoft.Compute/virtualMachines", "location": body["location"],
                    "properties": {**body["properties"],
                                   "timeCreated": datetime.now(UTC).isoformat()},
                    "_power": "running"}
        return self._creating(request, "virtualMachines", self.vms, key, resource)

    @staticmethod
    def _instance_view(vm: dict[str, Any]) -> dict[str, Any]:
        return {"statuses": [
            {"code": f"ProvisioningState/{vm['properties']['provisioningState'].lower()}",
             "level": "Info"},
            {"code": f"PowerState/{vm['_power']}", "level": "Info",
             "displayStatus": f"VM {vm['_power']}"}]}

    def _vm_view(self, vm: dict[str, Any], with_view: bool) -> dict[str, Any]:
        out = {k: v for k, v in vm.items() if not k.startswith("_")}
        if with_view:
            out["properties"] = {**out["properties"], "instanceView": self._instance_view(vm)}
        return out


def _require(body: dict[str, Any], *paths: str) -> None:
    for path in paths:
        node: Any = body
        for part in path.split("."):
            if not isinstance(node, dict) or node.get(part) in (None, ""):
                raise ArmFault(400, "InvalidParameter",
                               f"Required parameter '{path}' is missing (null).")
            node = node[part]


def _version_source(version: dict[str, Any]) -> str:
    return str(version["properties"]["storageProfile"]["osDiskImage"]["source"]["id"])


def _not_found(kind: str, name: str) -> ArmFault:
    return ArmFault(404, "ResourceNotFound",
                    f"The Resource 'Microsoft.Compute/{kind}/{name}' was not found.")


def _rg_name(resource_id: str) -> str:
    """``rg/name`` of a resource id (lower case), the double's key."""
    match = _ARM.match(resource_id or "")
    if not match:
        return ""
    return f"{match['rg']}/{match['rest'].split('/')[1]}".lower()


def _blob_name(disk: dict[str, Any]) -> str:
    return f"{disk['name'].lower()}-{hashlib.sha256(disk['id'].lower().encode()).hexdigest()[:8]}.vhd"


def server_ssl(cert: Any) -> ssl.SSLContext:
    """The double's TLS context from a trustme certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    return ctx
