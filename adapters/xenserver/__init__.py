"""Citrix Hypervisor / XenServer adapter (XenAPI over XML-RPC, the disk over HTTP).

Publish: log in (``session.login_with_password``), find the SR, network and ``vm_template``
by UUID or unique name (a missing or ambiguous one is named before anything is made) -> ``VDI.create`` with
the disk's virtual size -> ``PUT /import_raw_vdi?...&format=vhd`` streams the compositor's
dynamic VHD (:mod:`adapters.xenserver.vdi_import`) and its task is checked -> ``VM.clone`` of
``vm_template`` (a template clone is provisioned and made a VM) -> a bootable VBD (userdevice
0) for the disk and a VIF on ``network``; the VM is left Halted. The watch follows the VM
with ``event.from`` (:mod:`adapters.xenserver.xen_watch`): Running, then Halted -> Done.
Cleanup destroys the VM, its VBDs and disks, and the uploaded VDI. XenAPI is imported only
inside functions.

Example connector (layerbot.yml)::

    connectors:
      xen-lab:
        type: xenserver
        host: xenpool.lab.example          # the pool coordinator (or https://host:port)
        user_env: XEN_USER                 # names of environment variables, not values
        password_env: XEN_PASSWORD
        ca_file: certs/xen-ca.pem          # or insecure: true (labs only)
        sr: Local storage                  # storage repository (name_label)
        network: Pool-wide network associated with eth0
        vm_template: Windows 10 (64-bit)   # a template or VM (name_label or UUID) to clone
        console_url: https://xo.lab.example/#/vms/{uuid}/general   # optional
        scripts: [scripts/activate-office.cmd]
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from adapters.base import (
    Capability,
    DiskFormat,
    PlatformError,
    PlatformStep,
    PublishContext,
    Published,
    next_report,
)
from adapters.resources import Resource, latest
from adapters.retry import retrying
from adapters.steps import Step
from adapters.xenserver.vdi_import import import_vhd
from adapters.xenserver.xapi_session import Clients, XapiSession, session_key, tls_context
from adapters.xenserver.xen_config import Config
from adapters.xenserver.xen_objects import (
    attach,
    clone_vm,
    create_vdi,
    destroy_vdi,
    destroy_vm,
    find_one,
    halted_after_a_start,
    make_vm,
)
from adapters.xenserver.xen_resources import TASK_TAG, XenPublished, XenVdi, XenVm, XenVmRan
from adapters.xenserver.xen_watch import watching

__all__ = ["Adapter", "Clients", "Config", "XenPublished", "XenVdi", "XenVm", "XenVmRan"]

NEXT_STEPS = (
    "The virtual machine {name} is created, but off. Power it on in XenCenter or Xen "
    "Orchestra ({where}), log in as a local user, and let the machine run the scripts "
    "specified in the connector configuration; shut it down when it is in the desired state "
    "and the task changes to Done."
)


class Adapter:
    type_name: ClassVar[str] = "xenserver"
    platform: ClassVar[str] = "Citrix Hypervisor"
    capabilities: ClassVar[Capability] = Capability.WATCH_POWER | Capability.CREATES_VM

    def __init__(self, config: Config, clients: Clients | None = None) -> None:
        self.config = config
        self.clients = clients or Clients()
        self.context = tls_context(config.insecure, config.ca_file)
        self._key = session_key(config.url, config.user_env, config.password_env, config.insecure,
                                config.ca_file, self.clients)
        self.session = self.clients.pool.acquire(self._key, self._new_session)
        self._closed = False

    def _new_session(self) -> XapiSession:
        cfg = self.config
        return XapiSession(cfg.url, cfg.user_env, cfg.password_env, self.context,
                           self.clients.timeout, self.clients.read_retry)

    @classmethod
    def format_for(cls, config: object) -> DiskFormat:
        """The format from the connector's configuration alone (readiness: no adapter made)."""
        return "vhd-dynamic"

    def disk_format(self) -> DiskFormat:
        return self.format_for(self.config)

    # ------------------------------------------------------------ publish
    def steps(self, ctx: PublishContext) -> list[Step[PublishContext]]:
        return [PlatformStep("disk", self, self._disk), PlatformStep("vm", self, self._vm)]

    async def _one(self, cls: str, wanted: str, key: str) -> str:
        """The ref of the ``cls`` object with the UUID or the only name ``wanted``."""
        return await self.session.xapi(
            f"looking up {cls} {wanted!r}",
            lambda x: find_one(x, cls, wanted, key, f"XenServer {self.config.url}"), idempotent=True)

    async def _disk(self, ctx: PublishContext) -> None:
        if ctx.artifact_format != "vhd-dynamic":
            raise PlatformError(f"{self.platform}: expected a dynamic VHD, got {ctx.artifact_format}")
        cfg = self.config
        sr = await self._one("SR", cfg.sr, "sr")
        await self._one("network", cfg.network, "network")
        await self._one("VM", cfg.vm_template, "vm_template")
        record = {"name_label": ctx.image_name, "name_description": f"layerbot task {ctx.task_id}",
                  "SR": sr, "virtual_size": str(ctx.virtual_size), "type": "user",
                  "sharable": False, "read_only": False,
                  "other_config": {TASK_TAG: ctx.task_id}}
        await ctx.progress(0.0, f"creating disk {ctx.image_name} on SR {cfg.sr}")
        pending = XenVdi(name=ctx.image_name, task_id=ctx.task_id)
        await ctx.record(pending)
        vdi, uuid = await self.session.xapi("creating the disk", lambda x: create_vdi(x, record))
        await ctx.replace(pending, XenVdi(uuid=uuid, name=ctx.image_name, task_id=ctx.task_id))
        await retrying(lambda: import_vhd(self.session, vdi, ctx.image_name, ctx.artifact,
                                          self.context, ctx.progress, self.clients.task_poll),
                       f"uploading disk {ctx.image_name}", self.clients.upload_retry)

    async def _vm(self, ctx: PublishContext) -> None:
        cfg, name = self.config, ctx.image_name
        vdi_uuid = _need(latest(ctx.resources, XenVdi), "the uploaded disk").uuid
        template = await self._one("VM", cfg.vm_template, "vm_template")
        network = await self._one("network", cfg.network, "network")
        template_uuid = await self.session.xapi("reading vm_template",
                                                lambda x: x.VM.get_uuid(template), idempotent=True)
        await ctx.progress(0.0, f"cloning {cfg.vm_template!r} as VM {name}")
        pending = XenVm(name=name, task_id=ctx.task_id, template_uuid=template_uuid)
        await ctx.record(pending)
        vm, uuid = await self.session.xapi(
            "cloning vm_template", lambda x: clone_vm(x, template, name, ctx.task_id))
        await ctx.replace(pending, XenVm(uuid=uuid, name=name, task_id=ctx.task_id))
        await self.session.xapi("preparing the VM", lambda x: make_vm(x, vm))
        await self.session.xapi("attaching the disk and network",
                                lambda x: attach(x, vm, x.VDI.get_by_uuid(vdi_uuid), network))
        state = await self.session.xapi("reading the VM", lambda x: x.VM.get_power_state(vm),
                                        idempotent=True)
        if state != "Halted":
            raise PlatformError(f"{self.platform}: VM {name} is {state}, expected Halted")
        await ctx.progress(1.0, f"VM {name} is created, Halted")
        # without a console (Xen Orchestra...), the host: XenCenter finds the VM by name/UUID
        link = cfg.console_url.format(uuid=uuid) if cfg.console_url else cfg.url
        ctx.published = Published(
            link=link, summary=f"XenServer VM {name} (UUID {uuid}) on {cfg.url}, Halted",
            resource=XenPublished(uuid=uuid, ref=vm, name=name, published_at=time.time()))

    def next_steps(self, published: Published) -> str:
        vm = published.expect(XenPublished)
        return NEXT_STEPS.format(name=vm.name, where=f"{vm.name}, UUID {vm.uuid}, on "
                                                     f"{self.config.url}")

    # ------------------------------------------------------------ watch
    async def wait_for_shutdown(self, published: Published, ctx: PublishContext) -> None:
        vm = published.expect(XenPublished)
        timeout = self.config.watch_timeout or ctx.watch_timeout
        deadline = vm.published_at + timeout
        ran = any(isinstance(r, XenVmRan) and r.uuid == vm.uuid for r in ctx.resources)
        await ctx.progress(0.0, f"waiting for VM {vm.name} to be powered on and shut down")
        async with watching(self._key, self._new_session, vm.ref, self.clients.event_wait) as reports:
            now = await self.session.xapi("reading the VM", lambda x: x.VM.get_power_state(vm.ref),
                                          idempotent=True)
            reports.put_nowait(now)
            while True:
                report = await next_report(
                    reports, deadline,
                    f"{self.platform}: waited {timeout:g} s for VM {vm.name} to be powered on "
                    "and shut down (watch_timeout)")
                if report == "deleted":
                    raise PlatformError(f"{self.platform}: VM {vm.name} ({vm.uuid}) was deleted "
                                        "before it ran and shut down")
                if report == "Halted" and not ran:
                    # it may have run while no runner watched (a restart before "ran" was saved)
                    ran = await self.session.xapi(
                        "reading the VM's start time",
                        lambda x: halted_after_a_start(x, vm.ref, vm.published_at), idempotent=True)
                    if ran:
                        await ctx.record(XenVmRan(uuid=vm.uuid))
                if report == "Running" and not ran:
                    ran = True
                    await ctx.record(XenVmRan(uuid=vm.uuid))
                    await ctx.progress(0.5, f"VM {vm.name} is running; waiting for it to shut down")
                elif report == "Halted" and ran:
                    # a Halted report may be older than the Running one (the first read and the
                    # event session race): only the VM's state now ends the watch
                    if await self.session.xapi("reading the VM",
                                               lambda x: x.VM.get_power_state(vm.ref),
                                               idempotent=True) != "Halted":
                        continue
                    await ctx.progress(1.0, f"VM {vm.name} has shut down")
                    return

    # ------------------------------------------------------------ cleanup
    async def remove(self, resource: Resource) -> list[str]:
        if isinstance(resource, XenVm):
            return await self.session.xapi(f"removing {resource.describe()}",
                                           lambda x: destroy_vm(x, resource))
        if isinstance(resource, XenVdi):
            return await self.session.xapi(f"removing {resource.describe()}",
                                           lambda x: destroy_vdi(x, resource))
        raise PlatformError(f"{self.platform}: cannot remove {resource.describe()}")

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self.clients.pool.release(self._key, self.session)


def _need(resource: Resource | None, what: str) -> Any:
    if resource is None or getattr(resource, "uuid", "") is None:
        raise PlatformError(f"Citrix Hypervisor: {what} was not recorded")
    return resource
