"""VMware vSphere / VMware Cloud adapter: OVF import of a streamOptimized disk, then watch.

Publish resolves the connector's placement, generates an OVF descriptor, creates the
import spec, imports it (``ResourcePool.ImportVApp``) and streams the compositor's raw
disk into the HttpNfcLease as a streamOptimized VMDK converted on the fly on all cores
(:mod:`compositor.stream_vmdk`). ``mode: vm`` leaves the VM powered off in the folder;
``mode: template`` marks it as a VMware VM template. The watch waits, with the
PropertyCollector, until the VM (or, for a template, the first VM deployed from it) has
been powered on and then off. Helpers live in ``adapters/vsphere/``; pyvmomi is
imported only inside functions.

Example connector (layerbot.yml)::

    connectors:
      vcenter-lab:
        type: vsphere
        host: vcenter.lab.example
        user_env: VSPHERE_USER          # names of environment variables, not values
        password_env: VSPHERE_PASSWORD
        ca_file: certs/vcenter-ca.pem   # or insecure: true (labs only)
        datacenter: DC1
        cluster: Compute                # or host_system: esx01.lab.example
        resource_pool: Layering         # optional: a pool below the cluster's root pool, or
                                        # host/Compute/Resources/Layering (govc's path)
        datastore: vsanDatastore
        folder: Layering/Published      # below the datacenter's VM folder; also written
                                        # vm/Layering/Published or /DC1/vm/Layering/Published
        network: VM Network
        vm_template: win10-base         # optional: copy CPU/memory/firmware/NIC
        mode: vm                        # vm (vSphere) | template (VMware Cloud)
        scripts: [scripts/activate-office.cmd]
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from adapters.base import (
    Capability,
    CatalogPath,
    ConnectorConfig,
    DiskFormat,
    InsufficientSpaceError,
    NotFoundError,
    PlatformError,
    PlatformStep,
    PublishContext,
    Published,
    clean_up,
    path_kind,
    recorded_since,
    secret_from_env,
)
from adapters.blocking import SessionKey, SessionPool
from adapters.resources import Lifetime, Resource, latest
from adapters.retry import DEFAULT, RetryPolicy, retrying
from adapters.steps import Outcome, Step
from adapters.vsphere.inventory import Placement, prop, props, resolve
from adapters.vsphere.ovf import (
    Hardware,
    hardware_from_config,
    mark_task,
    ovf_descriptor,
    patch_import_spec,
)
from adapters.vsphere.power import WATCH_RETRY
from adapters.vsphere.session import (
    SESSIONS,
    CAFileError,
    StubFactory,
    VSphereSession,
    soap_stub,
    ssl_context,
)
from adapters.vsphere.upload import (
    ImportLeaseLost,
    UploadRefused,
    complete,
    lease_vm,
    upload_disk,
    wait_ready,
)
from adapters.vsphere.vm import destroy_marked, destroy_vm, mark_as_template, remove_partial
from adapters.vsphere.watch import wait_for_deploy, wait_power_cycle
from compositor.sparse import data_extents

log = logging.getLogger(__name__)
#: Imports of one publish: the first and two more, within 10 minutes.
IMPORT_RETRY = RetryPolicy(attempts=3, budget=600.0, first_delay=2.0, max_delay=30.0)

NEXT_STEPS = {
    "vm": (
        "The virtual machine {name} is created, but off. Power it on, log in, and let it run "
        "the scripts specified in the connector configuration; shut it down when it is in the "
        "desired state and the task changes to Done."
    ),
    "template": (
        "Create a VM from the VMware Virtual Machine template {name} and power it on; it runs "
        "the connector's scripts and shuts down, and the task changes to Done."
    ),
}


class Config(ConnectorConfig):
    """``type: vsphere`` connector settings (vSphere and VMware Cloud on AWS)."""

    type: Literal["vsphere"]
    host: str = Field(min_length=1)
    port: int = Field(443, ge=1, le=65535)
    user_env: str
    password_env: str
    insecure: bool = False
    ca_file: CatalogPath | None = None
    datacenter: str = Field(min_length=1)
    cluster: str | None = None
    host_system: str | None = None
    resource_pool: str | None = None
    datastore: str = Field(min_length=1)
    #: VM folder path below the datacenter's VM folder ("" or None: the root VM folder), or
    #: as govc writes it: vm/A/B, /DATACENTER/vm/A/B (see vsphere_inventory.below_datacenter).
    folder: str | None = None
    network: str | None = None
    vm_template: str | None = None
    mode: Literal["vm", "template"] = "vm"
    #: Seconds to wait for the guest to power on and off (default: the runner's, 24 h).
    watch_timeout: float | None = Field(None, gt=0)
    #: ``chunked``: convert while uploading; ``sized``: convert to a temporary file in the
    #: runner's work_dir first and upload it with a Content-Length (for NFC servers that
    #: refuse chunked transfer encoding).
    upload: Literal["chunked", "sized"] = "chunked"
    #: zlib level of the streamOptimized grains (1 is fastest; 6 matches qemu-img).
    compression_level: int = Field(1, ge=1, le=9)
    #: ``auto``: ISA-L when the ``isal`` package is installed (about 5x faster), else zlib.
    compressor: Literal["auto", "zlib"] = "auto"

    @model_validator(mode="after")
    def _check(self) -> Config:
        problems: list[str] = []
        if bool(self.cluster) == bool(self.host_system):
            problems.append("set exactly one of cluster or host_system")
        if self.insecure and self.ca_file is not None:
            problems.append("set either insecure or ca_file, not both")
        if self.ca_file is not None:
            problems += self._ca_file_problems(Path(self.ca_file))
        for field in ("user_env", "password_env"):
            var = getattr(self, field)
            if not os.environ.get(var):
                problems.append(f"environment variable {var} ({field}) is not set")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _ca_file_problems(self, ca_file: Path) -> list[str]:
        try:
            kind = path_kind(ca_file)
        except ValueError as exc:  # a name too long, a folder without permission
            return [f"ca_file: {exc}"]
        if kind != "file":
            return [f"ca_file {str(ca_file)!r} does not exist"]
        if not self.insecure:
            try:  # a file that is not PEM certificates fails here, not when publishing
                ssl_context(False, ca_file)
            except CAFileError as exc:
                return [str(exc)]
        return []


class VSphereImport(Resource):
    """An OVF import in progress: its HttpNfcLease and, once the lease is ready, its VM.
    Removing it aborts the lease, then destroys the VM.

    Recorded before ``ImportVApp`` without a lease (pending), with the task that imports: a
    VM whose lease or VM was never learnt (the answer lost, the runner killed, the lease gone
    with a dead runner's session) is found by its name and the task in its extraConfig."""

    kind: ClassVar[str] = "vsphere.import"
    lease: str | None = None
    vm: str | None = None
    name: str
    task_id: str | None = None

    def describe(self) -> str:
        return f"vSphere import of {self.name} (lease {self.lease or 'being created'})"


class VSphereVm(Resource):
    """The imported VM or VM template (kept once the publish succeeded)."""

    kind: ClassVar[str] = "vsphere.vm"
    moref: str
    name: str
    datacenter: str

    def describe(self) -> str:
        return f"VM {self.name} ({self.moref})"


class VSpherePublished(Resource):
    """What a publish left (``Published.resource``): the VM or template and what its watch
    needs. A fact, not something cleanup removes (that is the recorded VSphereVm)."""

    kind: ClassVar[str] = "vsphere.published"
    lifetime: ClassVar[Lifetime] = Lifetime.MARK
    moref: str
    name: str
    mode: Literal["vm", "template"]
    #: vCenter's time before the import: the deploy watch reads events from here on
    since: datetime
    published_at: float
    #: vCenter's instance UUID (None in rows that did not record it)
    vcenter: str | None = None

    def describe(self) -> str:
        return f"{'VM template' if self.mode == 'template' else 'VM'} {self.name} ({self.moref})"


class VSphereDeployedVm(Resource):
    """The VM a user deployed from the published template: the one the watch follows."""

    kind: ClassVar[str] = "vsphere.deployed_vm"
    lifetime: ClassVar[Lifetime] = Lifetime.MARK
    moref: str


class VSpherePoweredOn(Resource):
    """The watch saw this VM powered on (a restarted watch then waits for the power-off)."""

    kind: ClassVar[str] = "vsphere.powered_on"
    lifetime: ClassVar[Lifetime] = Lifetime.MARK
    moref: str


@dataclass(frozen=True)
class Clients:
    """How the adapter reaches vCenter; injected (``adapters.create(config, clients=...)``)
    by tests that talk to vcsim through a wrapped stub."""

    #: Makes the SOAP stub sessions log in on (pyVmomi's SmartStubAdapter by default).
    connect: StubFactory = soap_stub
    #: Longest single WaitForUpdatesEx (seconds); the watch loops until its deadline.
    wait_seconds: int = 30
    #: How long and how often the power watch retries while vCenter fails (restarts).
    watch_retry: RetryPolicy = WATCH_RETRY
    #: How often an import starts over after a lost lease or a busy NFC endpoint (429/503).
    import_retry: RetryPolicy = IMPORT_RETRY
    #: How reads (placement, lease state...) are retried after a busy or cut-short answer.
    read_retry: RetryPolicy = DEFAULT
    #: Where sessions are shared (one per vCenter, user and password).
    sessions: SessionPool[VSphereSession] = SESSIONS


class _ImportStep(PlatformStep):
    def __init__(self, adapter: Adapter) -> None:
        super().__init__("import", adapter, adapter._import_again_on_lost_lease)
        self.vsphere = adapter

    async def cleanup(self, ctx: PublishContext, outcome: Outcome) -> None:
        if outcome is Outcome.DETACHED:
            await self.vsphere.abort_import(ctx, self.recorded(ctx))
        await super().cleanup(ctx, outcome)


class Adapter:
    """vSphere's NFC lease cannot resume an upload: a resumed task imports again."""

    type_name: ClassVar[str] = "vsphere"
    platform: ClassVar[str] = "VMware vSphere"
    capabilities: ClassVar[Capability] = Capability.WATCH_POWER | Capability.CREATES_VM
    #: Threads compressing grains (None: all cores).
    workers: int | None = None

    def __init__(self, config: Config, clients: Clients | None = None) -> None:
        self.config = config
        self.clients = clients or Clients()
        try:
            self.ssl = ssl_context(config.insecure, config.ca_file)
        except (CAFileError, ssl.SSLError, OSError) as exc:  # the file changed since the check
            raise PlatformError(f"vSphere {config.host}: {exc}") from exc
        # another stub factory is another client: it must not be handed this one's session
        self._key = session_key(config, self.clients.connect)
        self.session = self.clients.sessions.acquire(self._key, lambda: VSphereSession(
            config.host, config.port, config.user_env, config.password_env, self.ssl,
            connect=self.clients.connect, read_retry=self.clients.read_retry))
        self._closed = False

    @classmethod
    def format_for(cls, config: object) -> DiskFormat:
        """The format from the connector's configuration alone (readiness: no adapter made)."""
        return "raw"

    def disk_format(self) -> DiskFormat:
        return self.format_for(self.config)

    # ------------------------------------------------------------ publish
    def steps(self, ctx: PublishContext) -> list[Step[PublishContext]]:
        return [_ImportStep(self)]

    async def _import_again_on_lost_lease(self, ctx: PublishContext) -> None:
        if ctx.artifact_format != "raw":
            raise PlatformError(f"vSphere: expected a raw disk, got {ctx.artifact_format}")
        async def attempt() -> None:
            before = list(ctx.resources)
            try:
                await self._import(ctx)
            except (ImportLeaseLost, UploadRefused):
                # this attempt's VM and lease go before the next one (or the step's cleanup)
                await clean_up(self, ctx, Outcome.FAILED, recorded_since(ctx, before))
                raise

        await retrying(attempt, f"{ctx.task_id}: importing {ctx.image_name}",
                       self.clients.import_retry, only=(ImportLeaseLost, UploadRefused))

    async def abort_import(self, ctx: PublishContext, among: list[Resource]) -> None:
        """A detaching runner aborts the lease, so the partial VM is inert until the next
        runner removes it; nothing is forgotten (the store is no longer this runner's)."""
        for found in among:
            if isinstance(found, VSphereImport):
                try:
                    await remove_partial(self.session, found.lease, None, found.name)
                except Exception:
                    log.exception("%s: could not abort the import lease; cleanup will retry",
                                  ctx.task_id)

    async def _import(self, ctx: PublishContext) -> None:
        cfg, session, name = self.config, self.session, ctx.image_name
        place: Placement = await session.call(lambda si: resolve(si, cfg), "finding the placement",
                                              idempotent=True)
        hw = Hardware()
        if place.template_vm is not None:
            from pyVmomi import vim

            config = await session.call(
                lambda si: prop(si, place.template_vm, vim.VirtualMachine, "config"),
                f"reading the VM template {cfg.vm_template}", idempotent=True)
            hw = hardware_from_config(config)
        await self._check_space(ctx.artifact, place)
        network = cfg.network or (hw.template_network if place.template_vm else None)
        if not cfg.network and place.template_vm is not None and hw.template_portgroup_key:
            place.network, network = await session.call(
                lambda si: _find_portgroup(si, place.datacenter, hw.template_portgroup_key),
                "finding the VM template's distributed port group", idempotent=True)
        if network and place.network is None:
            place.network = await session.call(
                lambda si: _find_network(si, place.datacenter, network), "finding the network",
                idempotent=True)
        descriptor = ovf_descriptor(name, ctx.virtual_size, hw, network)
        spec_result = await session.call(
            lambda si: _create_import_spec(si, descriptor, name, place, network),
            "creating the import spec")
        patch_import_spec(spec_result.importSpec, hw)
        mark_task(spec_result.importSpec, ctx.task_id)
        # Server time before the VM exists: the deploy watch reads events from here on.
        about, since = await session.call(lambda si: (si.content.about, si.CurrentTime()),
                                          "reading the server time", idempotent=True)
        pending = VSphereImport(name=name, task_id=ctx.task_id)
        await ctx.record(pending)
        lease = await session.call(
            lambda si: place.pool.ImportVApp(spec_result.importSpec, place.folder, place.host),
            "starting the import")
        importing = VSphereImport(lease=lease._moId, name=name, task_id=ctx.task_id)
        await ctx.replace(pending, importing)
        info = await wait_ready(session, lease)
        with_vm = VSphereImport(lease=lease._moId, vm=info.vm._moId, name=name,
                                task_id=ctx.task_id)
        await ctx.replace(importing, with_vm)
        item = spec_result.fileItem[0]
        device = next((d for d in info.device_urls if d.importKey == item.deviceId),
                      info.device_urls[0])
        await upload_disk(session, lease, device, ctx.artifact, ctx.progress, self.ssl,
                          create=bool(item.create), level=cfg.compression_level,
                          engine=cfg.compressor, workers=self.workers,
                          sized=cfg.upload == "sized", spool_dir=ctx.scratch_dir)
        await complete(session, lease)
        await ctx.replace(with_vm, VSphereVm(moref=info.vm._moId, name=name,
                                             datacenter=cfg.datacenter))
        if cfg.mode == "template":
            await session.call(lambda si: mark_as_template(si, info.vm), "marking as template")
        moid = info.vm._moId
        link = (f"https://{session.endpoint}/ui/app/vm;nav=v/urn:vmomi:VirtualMachine:"
                f"{moid}:{about.instanceUuid}")
        kind = "VM template" if cfg.mode == "template" else "VM"
        state = "" if cfg.mode == "template" else " (powered off)"
        ctx.published = Published(link=link, summary=f"{kind} {name}{state}", resource=VSpherePublished(
            moref=moid, name=name, mode=cfg.mode, since=since, published_at=time.time(),
            vcenter=about.instanceUuid))

    async def _check_space(self, raw: Path, place: Placement) -> None:
        from pyVmomi import vim

        needed = await asyncio.to_thread(_data_bytes, raw)
        values = await self.session.call(
            lambda si: props(si, [place.datastore], vim.Datastore,
                             ["summary.freeSpace", "name"])[0], "reading the datastore", idempotent=True)
        free = values.get("summary.freeSpace")
        if free is not None and free < needed:
            raise InsufficientSpaceError(
                f"vSphere: datastore {values.get('name')!r} has {free / 2**30:.1f} GiB free; "
                f"the disk holds {needed / 2**30:.1f} GiB of data")

    def next_steps(self, published: Published) -> str:
        vm = published.expect(VSpherePublished)
        return NEXT_STEPS[vm.mode].format(name=vm.name)

    # ------------------------------------------------------------ watch
    async def wait_for_shutdown(self, published: Published, ctx: PublishContext) -> None:
        from pyVmomi import vim

        res, session = published.expect(VSpherePublished), self.session
        timeout = self.config.watch_timeout or ctx.watch_timeout
        deadline = res.published_at + timeout
        stub, vcenter = await session.call(lambda si: (si._stub, si.content.about.instanceUuid),
                                           "connecting")
        if res.vcenter not in (None, vcenter):
            raise NotFoundError(f"vSphere: {self.config.host} is not the vCenter the image was "
                                f"published to ({res.vcenter}); cannot watch {res.moref}")
        vm_id: str | None = res.moref
        if res.mode == "template":
            deployed_mark = latest(ctx.resources, VSphereDeployedVm)
            vm_id = deployed_mark.moref if deployed_mark else None
            if not vm_id:
                await ctx.progress(0.0, "waiting for a VM to be deployed from the template")
                deployed = await wait_for_deploy(
                    session, vim.VirtualMachine(res.moref, stub),
                    since=res.since, deadline=deadline,
                    timeout=timeout, wait_seconds=self.clients.wait_seconds)
                vm_id = deployed._moId
                await ctx.record(VSphereDeployedVm(moref=vm_id))
        vm = vim.VirtualMachine(vm_id, stub)
        name = await session.call(lambda si: _vm_name(si, vm), "reading the VM name", idempotent=True)
        if name is None:
            raise NotFoundError(f"vSphere: VM {vm_id} no longer exists; nothing to watch")
        await ctx.progress(0.0, f"waiting for VM {name} to be powered on and shut down")

        async def powered_on() -> None:
            await ctx.record(VSpherePoweredOn(moref=vm_id))
            await ctx.progress(0.5, f"VM {name} is running; waiting for it to shut down")

        await wait_power_cycle(
            session, vm,
            seen_on=any(isinstance(r, VSpherePoweredOn) and r.moref == vm_id
                        for r in ctx.resources), deadline=deadline,
            timeout=timeout, wait_seconds=self.clients.wait_seconds, on_powered_on=powered_on,
            retry=self.clients.watch_retry)
        await ctx.progress(1.0, f"VM {name} has shut down")

    # ------------------------------------------------------------ cleanup
    async def remove(self, resource: Resource) -> list[str]:
        if isinstance(resource, VSphereImport):
            vm = resource.vm
            if vm is None and resource.lease:
                # the answer that named the VM may have been lost (a dropped connection, a
                # crash): the lease still knows it
                vm = await lease_vm(self.session, resource.lease)
            removed = await remove_partial(self.session, resource.lease, vm, resource.name)
            if vm is None and resource.task_id:
                # ImportVApp's answer was lost, or the lease went with a dead runner's session
                removed += await destroy_marked(self.session, resource.name, resource.task_id)
            return removed
        if isinstance(resource, VSphereVm):
            return await destroy_vm(self.session, resource.moref, resource.name)
        raise PlatformError(f"vSphere: cannot remove {resource.describe()}")

    @staticmethod
    def legacy_resources(old: Mapping[str, Any]) -> list[Resource]:
        """The dict a task recorded before resources were typed."""
        out: list[Resource] = []
        name = old.get("vm_name") or old.get("vm") or ""
        if old.get("lease"):
            out.append(VSphereImport(lease=old["lease"], vm=old.get("vm"), name=name))
        elif old.get("vm"):
            out.append(VSphereVm(moref=old["vm"], name=name, datacenter=""))
        if old.get("deployed_vm"):
            out.append(VSphereDeployedVm(moref=old["deployed_vm"]))
        if old.get("powered_on"):
            out.append(VSpherePoweredOn(moref=old["powered_on"]))
        return out

    @staticmethod
    def legacy_published(old: Mapping[str, Any]) -> Resource | None:
        """The dict ``Published.resource`` was before it was typed."""
        if not old.get("vm"):
            return None
        return VSpherePublished(
            moref=old["vm"], name=old.get("vm_name") or old["vm"], mode=old.get("mode", "vm"),
            since=old.get("since") or datetime.fromtimestamp(0, UTC),
            published_at=float(old.get("published_at") or time.time()), vcenter=old.get("vcenter"))

    async def unpublish(self, published: Published) -> list[str]:
        """Destroy a published VM or template (for tests and for a user's "unpublish")."""
        vm = published.expect(VSpherePublished)
        return await destroy_vm(self.session, vm.moref, vm.name)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self.clients.sessions.release(self._key, self.session)


def session_key(config: Config, connect: StubFactory = soap_stub) -> SessionKey:
    """Connectors to the same vCenter as the same user share one session, whatever the names
    of their environment variables; another stub factory is another client."""
    return SessionKey.of(f"{config.host}:{config.port}", secret_from_env(config.user_env),
                         secret_from_env(config.password_env), config.insecure,
                         str(config.ca_file), connect)


def _vm_name(si: Any, vm: Any) -> str | None:
    from pyVmomi import vim, vmodl

    try:
        return prop(si, vm, vim.VirtualMachine, "name")  # type: ignore[no-any-return]
    except vmodl.fault.ManagedObjectNotFound:
        return None


def _data_bytes(raw: Path) -> int:
    fd = os.open(raw, os.O_RDONLY)
    try:
        return sum(end - start for start, end in data_extents(fd, os.fstat(fd).st_size))
    finally:
        os.close(fd)


def _find_network(si: Any, datacenter: Any, name: str) -> Any:
    from pyVmomi import vim

    from adapters.vsphere.inventory import find_by_name

    found = find_by_name(si, datacenter, vim.Network, name)
    if found is None:
        raise NotFoundError(f"vSphere: network {name!r} (of the VM template) not found")
    return found


def _find_portgroup(si: Any, datacenter: Any, key: str | None) -> tuple[Any, str]:
    """The distributed port group with ``key`` and its name."""
    from pyVmomi import vim

    from adapters.vsphere.inventory import find_by_property, prop

    found = find_by_property(si, datacenter, vim.dvs.DistributedVirtualPortgroup, "key", key)
    if found is None:
        raise NotFoundError(
            f"vSphere: distributed port group {key!r} (of the VM template's NIC) not found")
    return found, prop(si, found, vim.dvs.DistributedVirtualPortgroup, "name")


def _create_import_spec(si: Any, descriptor: str, name: str, place: Placement,
                        network: str | None) -> Any:
    from pyVmomi import vim

    params = vim.OvfManager.CreateImportSpecParams(entityName=name, diskProvisioning="thin")
    if network and place.network is not None:
        params.networkMapping = [vim.OvfManager.NetworkMapping(name=network,
                                                               network=place.network)]
    result = si.content.ovfManager.CreateImportSpec(descriptor, place.pool, place.datastore,
                                                    params)
    if result.error:
        messages = "; ".join(e.localizedMessage or type(e.fault).__name__ for e in result.error)
        raise PlatformError(f"vSphere: the OVF descriptor was rejected: {messages}")
    for warning in result.warning or []:
        log.warning("vSphere OVF import: %s", warning.localizedMessage)
    return result
