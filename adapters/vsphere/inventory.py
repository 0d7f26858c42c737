"""Find the connector's placement (datacenter, pool, folder, datastore, ...) in the inventory.

All functions are blocking and take a pyvmomi ServiceInstance; run them through
:meth:`adapters.vsphere.session.VSphereSession.call`. Every missing name is reported
at once, in one NotFoundError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapters.base import AdapterError, NotFoundError


class PlacementPathError(AdapterError):
    """A folder or resource_pool path that cannot name a place in the connector's datacenter."""


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
    found = all_by_property(si, root, kind, path, value, first=True)
    return found[0] if found else None


def all_by_property(si: Any, root: Any, kind: Any, path: str, value: Any, *,
                    first: bool = False) -> list[Any]:
    """The objects of ``kind`` below ``root`` whose property ``path`` is ``value`` (``first``:
    stop at the first)."""
    from pyVmomi import vmodl

    found: list[Any] = []
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
            found += [item.obj for item in result.objects
                      if item.propSet and item.propSet[0].val == value]
            if (found and first) or not result.token:
                break
            result = si.content.propertyCollector.ContinueRetrievePropertiesEx(result.token)
        return found[:1] if first else found
    finally:
        view.DestroyView()


def _find_datacenter(si: Any, name: str) -> Any | None:
    from pyVmomi import vim

    found = si.content.searchIndex.FindByInventoryPath(name)
    if isinstance(found, vim.Datacenter):
        return found
    return find_by_name(si, si.content.rootFolder, vim.Datacenter, name)


def _inventory_path(si: Any, entity: Any) -> str:
    """``entity``'s path from the root folder ("DC0", or "Lab/DC0" in a folder)."""
    from pyVmomi import vim

    names: list[str] = []
    root = si.content.rootFolder
    while entity is not None and entity != root:
        values = props(si, [entity], vim.ManagedEntity, ["name", "parent"])[0]
        names.append(values["name"])
        entity = values.get("parent")
    return "/".join(reversed(names))


def _datacenter_names(si: Any) -> list[str]:
    from pyVmomi import vim

    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.Datacenter], True)
    try:
        return sorted(str(d["name"]) for d in props(si, list(view.view), vim.Datacenter, ["name"]))
    finally:
        view.DestroyView()


def below_datacenter(si: Any, setting: str, value: str, root: str, dc_path: str) -> list[str]:
    """The parts of a folder or resource_pool path below the datacenter, as vSphere users
    write it: ``Layering/Published``, ``vm/Layering/Published`` (relative to the datacenter,
    as govc takes it) or ``/DC0/vm/Layering/Published`` (absolute, as govc, Ansible and
    PowerCLI write it). ``root`` is the datacenter's folder the path starts in: ``vm`` for
    folders, ``host`` for resource pools. Relative paths that do not start with ``root``
    keep it implicit (the returned list then does not start with it), and so does a path
    with a leading slash but no ``root`` after its first name (``/Templates/Desktops``)."""
    parts = [p for p in value.strip().split("/") if p]
    if not value.strip().startswith("/") or root not in parts[1:]:
        return parts
    at = parts.index(root, 1)
    named = "/".join(parts[:at])
    if named != dc_path:
        raise PlacementPathError(
            f"vSphere: {setting} {value!r} is in datacenter {named!r}, but the connector's "
            f"datacenter is {dc_path!r} (datacenters on this vCenter: "
            f"{', '.join(_datacenter_names(si))}); write it as "
            f"/{dc_path}/{'/'.join(parts[at:])} or below the connector's datacenter")
    return parts[at:]


def _find_folder(si: Any, vm_folder: Any, parts: list[str]) -> Any | None:
    folder = vm_folder
    for part in parts[1:] if parts[:1] == ["vm"] else parts:
        folder = si.content.searchIndex.FindChild(folder, part)
        if folder is None:
            return None
    return folder


def _find_pool(si: Any, root_pool: Any, dc_path: str, parts: list[str]) -> Any | None:
    """``parts`` from :func:`below_datacenter`: host/CLUSTER/Resources/POOL/... (govc's
    inventory path), or a pool name anywhere below the root pool, or a path of names below it."""
    from pyVmomi import vim

    if parts[:1] == ["host"]:
        found = si.content.searchIndex.FindByInventoryPath("/".join([dc_path, *parts]))
        return found if isinstance(found, vim.ResourcePool) else None
    if len(parts) == 1:
        return find_by_name(si, root_pool, vim.ResourcePool, parts[0])
    pool = root_pool
    for part in parts:
        pool = si.content.searchIndex.FindChild(pool, part)
        if pool is None:
            return None
    return pool if isinstance(pool, vim.ResourcePool) else None


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
    dc_path = _inventory_path(si, dc)
    folder_parts = below_datacenter(si, "folder", cfg.folder or "", "vm", dc_path)
    pool_parts = below_datacenter(si, "resource_pool", cfg.resource_pool or "", "host", dc_path)
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
    if pool_parts and root_pool is not None:
        pool = need(_find_pool(si, root_pool, dc_path, pool_parts), "resource pool",
                    cfg.resource_pool)
        owner = prop(si, pool, vim.ResourcePool, "owner") if pool is not None else None
        if owner is not None and owner != prop(si, root_pool, vim.ResourcePool, "owner"):
            raise PlacementPathError(
                f"vSphere: resource_pool {cfg.resource_pool!r} belongs to "
                f"{_inventory_path(si, owner)!r}, not to the connector's "
                f"{'cluster ' + repr(cfg.cluster) if cfg.cluster else 'host ' + repr(cfg.host_system)}")
    else:
        pool = root_pool
    folder = dc_props["vmFolder"]
    if folder_parts:
        folder = need(_find_folder(si, folder, folder_parts), "VM folder", cfg.folder)
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
