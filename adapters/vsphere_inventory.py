"""Find the connector's placement (datacenter, pool, folder, datastore, ...) in the inventory.

All functions are blocking and take a pyvmomi ServiceInstance; run them through
:meth:`adapters.vsphere_session.VSphereSession.call`. Every missing name is reported
at once, in one NotFoundError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapters.base import NotFoundError


@dataclass
class Placement:
    datacenter: Any
    pool: Any
    folder: Any
    datastore: Any
    host: Any | None = None
    network: Any | None = None
    template_vm: Any | None = None


def props(si: Any, objects: list[Any], kind: Any, paths: list[str]) -> list[dict[str, Any]]:
    """Read properties through the PropertyCollector (never via attribute accessors).

    Returns one dict per object that still exists, with ``"obj"`` set to the object.
    """
    from pyVmomi import vmodl

    pc = vmodl.query.PropertyCollector
    spec = pc.FilterSpec(
        objectSet=[pc.ObjectSpec(obj=o, skip=False) for o in objects],
        propSet=[pc.PropertySpec(type=kind, pathSet=paths, all=False)],
    )
    out: list[dict[str, Any]] = []
    result = si.content.propertyCollector.RetrievePropertiesEx([spec], pc.RetrieveOptions())
    while result is not None:
        for item in result.objects:
            values = {p.name: p.val for p in item.propSet}
            values["obj"] = item.obj
            out.append(values)
        if not result.token:
            break
        result = si.content.propertyCollector.ContinueRetrievePropertiesEx(result.token)
    return out


def prop(si: Any, obj: Any, kind: Any, path: str) -> Any:
    found = props(si, [obj], kind, [path])
    return found[0].get(path) if found else None


def find_by_name(si: Any, root: Any, kind: Any, name: str) -> Any | None:
    """The first object of ``kind`` named ``name`` below ``root``."""
    return find_by_property(si, root, kind, "name", name)


def find_by_property(si: Any, root: Any, kind: Any, path: str, value: Any) -> Any | None:
    """The first object of ``kind`` below ``root`` whose property ``path`` is ``value``."""
    from pyVmomi import vmodl

    view = si.content.viewManager.CreateContainerView(root, [kind], True)
    try:
        pc = vmodl.query.PropertyCollector
        traversal = pc.TraversalSpec(name="view", path="view", skip=False, type=type(view))
        spec = pc.FilterSpec(
            objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[traversal])],
            propSet=[pc.PropertySpec(type=kind, pathSet=[path], all=False)],
        )
        result = si.content.propertyCollector.RetrievePropertiesEx([spec], pc.RetrieveOptions())
        while result is not None:
            for item in result.objects:
                if item.propSet and item.propSet[0].val == value:
                    return item.obj
            if not result.token:
                break
            result = si.content.propertyCollector.ContinueRetrievePropertiesEx(result.token)
        return None
    finally:
        view.DestroyView()


def _find_datacenter(si: Any, name: str) -> Any | None:
    from pyVmomi import vim

    found = si.content.searchIndex.FindByInventoryPath(name)
    if isinstance(found, vim.Datacenter):
        return found
    return find_by_name(si, si.content.rootFolder, vim.Datacenter, name)


def _find_folder(si: Any, vm_folder: Any, path: str) -> Any | None:
    folder = vm_folder
    for part in [p for p in path.strip("/").split("/") if p]:
        folder = si.content.searchIndex.FindChild(folder, part)
        if folder is None:
            return None
    return folder


def _host_without_drs(si: Any, cluster: Any, datastore: Any) -> Any | None:
    """A host for ImportVApp when the cluster has no DRS (vCenter then requires one).

    The first connected host, not in maintenance mode, that mounts ``datastore``; None
    when DRS is on (it places the VM itself).
    """
    from pyVmomi import vim

    values = props(si, [cluster], vim.ClusterComputeResource, ["configurationEx", "host"])[0]
    config = values.get("configurationEx")
    drs = getattr(config, "drsConfig", None)
    if drs is not None and drs.enabled:
        return None
    hosts = props(si, list(values.get("host") or []), vim.HostSystem,
                  ["runtime.connectionState", "runtime.inMaintenanceMode", "datastore"])
    for host in hosts:
        mounted = {d._moId for d in host.get("datastore") or []}
        if (host.get("runtime.connectionState") == "connected"
                and not host.get("runtime.inMaintenanceMode")
                and datastore._moId in mounted):
            return host["obj"]
    return None


def resolve(si: Any, cfg: Any) -> Placement:
    """Look up every object the connector config names; raise NotFoundError listing the misses."""
    from pyVmomi import vim

    dc = _find_datacenter(si, cfg.datacenter)
    if dc is None:
        raise NotFoundError(f"vSphere: datacenter {cfg.datacenter!r} not found on {cfg.host}")
    dc_props = props(si, [dc], vim.Datacenter, ["vmFolder", "hostFolder"])[0]
    missing: list[str] = []

    def need(obj: Any | None, what: str, name: str) -> Any:
        if obj is None:
            missing.append(f"{what} {name!r}")
        return obj

    datastore = need(find_by_name(si, dc, vim.Datastore, cfg.datastore), "datastore",
                     cfg.datastore)
    host = pool = None
    if cfg.cluster:
        cluster = need(find_by_name(si, dc_props["hostFolder"], vim.ClusterComputeResource,
                                    cfg.cluster), "cluster", cfg.cluster)
        root_pool = prop(si, cluster, vim.ComputeResource, "resourcePool") if cluster else None
        if cluster is not None and datastore is not None:
            host = _host_without_drs(si, cluster, datastore)
    else:
        host = need(find_by_name(si, dc_props["hostFolder"], vim.HostSystem, cfg.host_system),
                    "host", cfg.host_system)
        parent = prop(si, host, vim.HostSystem, "parent") if host else None
        root_pool = prop(si, parent, vim.ComputeResource, "resourcePool") if parent else None
    if cfg.resource_pool and root_pool is not None:
        pool = need(find_by_name(si, root_pool, vim.ResourcePool, cfg.resource_pool),
                    "resource pool", cfg.resource_pool)
    else:
        pool = root_pool
    folder = dc_props["vmFolder"]
    if cfg.folder:
        folder = need(_find_folder(si, folder, cfg.folder), "VM folder", cfg.folder)
    network = None
    if cfg.network:
        network = need(find_by_name(si, dc, vim.Network, cfg.network), "network", cfg.network)
    template_vm = None
    if cfg.vm_template:
        template_vm = need(find_by_name(si, dc, vim.VirtualMachine, cfg.vm_template),
                           "VM template", cfg.vm_template)
    if missing:
        raise NotFoundError(
            f"vSphere: not found in datacenter {cfg.datacenter!r}: {', '.join(missing)}")
    return Placement(datacenter=dc, pool=pool, folder=folder, datastore=datastore, host=host,
                     network=network, template_vm=template_vm)
