"""A XenAPI double on 127.0.0.1: XML-RPC at ``/`` (xmlrpc.server, threaded) and ``PUT
/import_raw_vdi``, after the vendor's data model and notes (../shared/apis/xenapi/).

It validates what it receives (the session of every call, the required fields of VDI.create,
VBD.create and VIF.create, the upload's query, Content-Length and VHD footer/header, and that
the VHD's virtual size fits the VDI) and keeps state: SRs, networks, VMs (templates too),
VDIs, VBDs, VIFs, power states, tasks and the VM events ``event.from`` returns with tokens.
Faults are switched on by tests (``fail_import``, ``cut_upload_at``, ``redirect_import``,
``drop_sessions``, ``holds``).

Like xapi, ``PUT /import_raw_vdi`` answers ``200`` (HTTP/1.0, no Content-Length, a
``task-id`` header) before it reads the body and tells the outcome only through the task,
which it finishes on a thread of its own after the body was read.
"""

from __future__ import annotations

import struct
import threading
import time
import uuid as uuidlib
import xmlrpc.client
from collections import Counter
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xmlrpc.server import SimpleXMLRPCDispatcher, SimpleXMLRPCRequestHandler

NULL = "OpaqueRef:NULL"
VDI_FIELDS = ("SR", "virtual_size", "type", "sharable", "read_only", "other_config")
VBD_FIELDS = ("VM", "VDI", "userdevice", "bootable", "mode", "type", "unpluggable", "empty",
              "other_config", "qos_algorithm_type", "qos_algorithm_params")
VIF_FIELDS = ("device", "network", "VM", "MAC", "MTU", "other_config", "qos_algorithm_type",
              "qos_algorithm_params")


class XapiFailure(Exception):
    def __init__(self, *details: object) -> None:
        super().__init__(*details)
        self.details = [str(d) for d in details]


def _ref() -> str:
    return f"OpaqueRef:{uuidlib.uuid4()}"


@dataclass
class Upload:
    vdi: str
    size: int
    virtual_size: int


@dataclass
class XapiState:
    users: dict[str, str]
    sessions: set[str] = field(default_factory=set)
    srs: dict[str, dict[str, Any]] = field(default_factory=dict)
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    vms: dict[str, dict[str, Any]] = field(default_factory=dict)
    vdis: dict[str, dict[str, Any]] = field(default_factory=dict)
    vbds: dict[str, dict[str, Any]] = field(default_factory=dict)
    vifs: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: (id, class, operation, ref, snapshot)
    events: list[tuple[int, str, str, str, dict[str, Any]]] = field(default_factory=list)
    uploads: list[Upload] = field(default_factory=list)
    logins: int = 0
    event_calls: int = 0
    #: xapi's error of the next import task, set after half the body is read
    fail_import: list[str] | None = None
    #: the next ``cut_uploads`` uploads' connections are closed after this many body bytes
    cut_upload_at: int | None = None
    cut_uploads: int = 1
    #: the next upload is answered 302 to the same handler (as a host that sees the SR)
    redirect_import: bool = False
    redirects: int = 0
    puts: int = 0
    #: method ("VM.clone") -> an event its calls wait for (outside the lock); ``entered`` counts them
    holds: dict[str, threading.Event] = field(default_factory=dict)
    entered: Counter[str] = field(default_factory=Counter)


class XapiDouble:
    def __init__(self, users: dict[str, str], sr_size: int = 1 << 40) -> None:
        self.state = XapiState(users=users)
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.add_sr("Local storage", sr_size)
        self.add_network("Pool-wide network associated with eth0")
        #: the VMs, VDIs and VBDs a test set up (all else is made through the API)
        self.given: set[str] = set()
        self.add_vm("Windows 10 (64-bit)", template=True, other_config={"disks": "<provision/>"})
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ set-up and inspection
    def add_sr(self, name: str, size: int) -> str:
        ref = _ref()
        self.state.srs[ref] = {"uuid": str(uuidlib.uuid4()), "name_label": name,
                               "physical_size": size}
        return ref

    def add_network(self, name: str) -> str:
        ref = _ref()
        self.state.networks[ref] = {"uuid": str(uuidlib.uuid4()), "name_label": name}
        return ref

    def add_vm(self, name: str, *, template: bool = False,
               other_config: dict[str, str] | None = None) -> str:
        """A template or VM that exists before the test (not counted as a leftover)."""
        with self.lock:
            ref = self._new_vm(name, template, other_config or {})
            self.given.add(ref)
            return ref

    def add_disk(self, vm_ref: str, name: str, userdevice: str, size: int = 1 << 30) -> str:
        """A disk of a given VM at ``userdevice`` (its VDI and VBD are not leftovers)."""
        with self.lock:
            sr = next(iter(self.state.srs))
            vdi = self.x_VDI_create({"name_label": name, "SR": sr, "virtual_size": str(size),
                                     "type": "user", "sharable": False, "read_only": False,
                                     "other_config": {}})
            vbd = self._new_vbd(vm_ref, vdi, userdevice)
            self.given.update((vdi, vbd))
            return vdi

    def _new_vm(self, name: str, template: bool, other_config: dict[str, str]) -> str:
        ref, metrics = _ref(), _ref()
        self.state.vms[ref] = {"uuid": str(uuidlib.uuid4()), "name_label": name,
                               "is_a_template": template, "power_state": "Halted",
                               "VBDs": [], "VIFs": [], "other_config": dict(other_config),
                               "provisioned": False, "metrics": metrics,
                               "start_time": "19700101T00:00:00Z"}
        self._event("vm", "add", ref)
        return ref

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def vm_by_name(self, name: str) -> tuple[str, dict[str, Any]] | None:
        with self.lock:
            found = [(r, v) for r, v in self.state.vms.items() if v["name_label"] == name]
            return found[0] if found else None

    def leftovers(self, name: str = "") -> list[str]:
        """Every VM (a clone still a template too), VDI, VBD and VIF made through the API."""
        with self.lock:
            made = [v["name_label"] for r, v in self.state.vms.items() if r not in self.given]
            made += [f"vdi {v['name_label']}" for r, v in self.state.vdis.items()
                     if r not in self.given]
            made += [f"vbd {r}" for r in self.state.vbds if r not in self.given]
            made += [f"vif {r}" for r in self.state.vifs]
            return made

    def set_power(self, vm_name: str, state: str) -> None:
        """What an admin's VM.start or the guest's shutdown does."""
        with self.lock:
            found = self.vm_by_name(vm_name)
            assert found is not None, vm_name
            found[1]["power_state"] = state
            if state == "Running":  # VM_metrics.start_time: whole seconds, UTC
                found[1]["start_time"] = time.strftime("%Y%m%dT%H:%M:%SZ", time.gmtime())
            self._event("vm", "mod", found[0])

    def drop_sessions(self) -> None:
        """xapi restarted: every session is gone (the next call gets SESSION_INVALID)."""
        with self.lock:
            self.state.sessions.clear()

    # ------------------------------------------------------------ server
    def start(self) -> XapiDouble:
        double = self

        class Handler(SimpleXMLRPCRequestHandler):
            rpc_paths = ("/", "/RPC2")

            def do_PUT(self) -> None:
                double.import_raw_vdi(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer, SimpleXMLRPCDispatcher):
            daemon_threads = True
            logRequests = False

            def __init__(self) -> None:
                ThreadingHTTPServer.__init__(self, ("127.0.0.1", 0), Handler)
                SimpleXMLRPCDispatcher.__init__(self, allow_none=True, encoding=None)

        self._server = Server()
        self._server.register_instance(self)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # ------------------------------------------------------------ XML-RPC
    def _dispatch(self, method: str, params: tuple[Any, ...]) -> dict[str, Any]:
        try:
            if method == "session.login_with_password":
                return {"Status": "Success", "Value": self._login(*params[:2])}
            session, *args = params
            gate = self.state.holds.get(method)
            if gate is not None:
                with self.lock:
                    self.state.entered[method] += 1
                gate.wait(30)
            if method == "event.from":  # waits outside the lock
                self._check_session(session)
                return {"Status": "Success", "Value": self._event_from(*args)}
            with self.lock:
                self._check_session(session)
                cls, name = method.split(".", 1)
                handler = getattr(self, f"x_{cls}_{name}", None)
                if handler is None:
                    raise XapiFailure("MESSAGE_METHOD_UNKNOWN", method)
                value = handler(*args)
            return {"Status": "Success", "Value": value}
        except XapiFailure as exc:
            return {"Status": "Failure", "ErrorDescription": exc.details}
        except TypeError as exc:
            return {"Status": "Failure", "ErrorDescription": ["MESSAGE_PARAMETER_COUNT_MISMATCH",
                                                              method, str(exc)]}

    def _login(self, user: str, password: str) -> str:
        with self.lock:
            if self.state.users.get(user) != password:
                raise XapiFailure("SESSION_AUTHENTICATION_FAILED", user,
                                  "Authentication failure")
            ref = _ref()
            self.state.sessions.add(ref)
            self.state.logins += 1
            return ref

    def _check_session(self, session: str) -> None:
        with self.lock:
            if session not in self.state.sessions:
                raise XapiFailure("SESSION_INVALID", session)

    def x_session_logout(self) -> str:
        return ""

    def _by_name(self, table: dict[str, dict[str, Any]], name: str) -> list[str]:
        return [r for r, v in table.items() if v["name_label"] == name]

    def x_SR_get_by_name_label(self, name: str) -> list[str]:
        return self._by_name(self.state.srs, name)

    def x_network_get_by_name_label(self, name: str) -> list[str]:
        return self._by_name(self.state.networks, name)

    def x_VM_get_by_name_label(self, name: str) -> list[str]:
        return self._by_name(self.state.vms, name)

    def x_VDI_get_by_name_label(self, name: str) -> list[str]:
        return self._by_name(self.state.vdis, name)

    def x_SR_get_by_uuid(self, uuid: str) -> str:
        return self._by_uuid(self.state.srs, uuid)

    def x_network_get_by_uuid(self, uuid: str) -> str:
        return self._by_uuid(self.state.networks, uuid)

    def _get(self, table: dict[str, dict[str, Any]], ref: str) -> dict[str, Any]:
        if ref not in table:
            raise XapiFailure("HANDLE_INVALID", "object", ref)
        return table[ref]

    def _by_uuid(self, table: dict[str, dict[str, Any]], uuid: str) -> str:
        for ref, record in table.items():
            if record["uuid"] == uuid:
                return ref
        raise XapiFailure("UUID_INVALID", "object", uuid)

    @staticmethod
    def _required(record: dict[str, Any], fields: tuple[str, ...], cls: str) -> None:
        missing = [f for f in fields if f not in record]
        if missing:
            raise XapiFailure("FIELD_TYPE_ERROR", f"{cls}.{missing[0]}")

    # VDI
    def x_VDI_create(self, record: dict[str, Any]) -> str:
        self._required(record, VDI_FIELDS, "VDI")
        sr = self._get(self.state.srs, record["SR"])
        if not isinstance(record["virtual_size"], str):
            raise XapiFailure("FIELD_TYPE_ERROR", "VDI.virtual_size (int64: a string)")
        size = int(record["virtual_size"])
        used = sum(v["virtual_size"] for v in self.state.vdis.values() if v["SR"] == record["SR"])
        if used + size > sr["physical_size"]:
            raise XapiFailure("SR_FULL", str(size), str(sr["physical_size"] - used))
        ref = _ref()
        self.state.vdis[ref] = {"uuid": str(uuidlib.uuid4()), "name_label": record.get("name_label", ""),
                                "SR": record["SR"], "virtual_size": size, "type": record["type"],
                                "other_config": record["other_config"], "VBDs": [], "imported": 0}
        return ref

    def x_VDI_get_uuid(self, ref: str) -> str:
        return str(self._get(self.state.vdis, ref)["uuid"])

    def x_VDI_get_by_uuid(self, uuid: str) -> str:
        return self._by_uuid(self.state.vdis, uuid)

    def x_VDI_get_other_config(self, ref: str) -> dict[str, str]:
        return dict(self._get(self.state.vdis, ref)["other_config"])

    def x_VDI_get_name_label(self, ref: str) -> str:
        return str(self._get(self.state.vdis, ref)["name_label"])

    def x_VDI_destroy(self, ref: str) -> str:
        if self._get(self.state.vdis, ref)["VBDs"]:
            raise XapiFailure("VDI_IN_USE", ref, "destroy")
        del self.state.vdis[ref]
        return ""

    # task
    def x_task_create(self, label: str, description: str) -> str:
        ref = _ref()
        self.state.tasks[ref] = {"name_label": label, "status": "pending", "error_info": [],
                                 "progress": 0.0}
        return ref

    def x_task_get_status(self, ref: str) -> str:
        return str(self._get(self.state.tasks, ref)["status"])

    def x_task_get_error_info(self, ref: str) -> list[str]:
        return list(self._get(self.state.tasks, ref)["error_info"])

    def x_task_destroy(self, ref: str) -> str:
        self._get(self.state.tasks, ref)
        del self.state.tasks[ref]
        return ""

    # VM
    def x_VM_clone(self, ref: str, name: str) -> str:
        source = self._get(self.state.vms, ref)
        if source["power_state"] != "Halted":
            raise XapiFailure("VM_BAD_POWER_STATE", ref, "Halted", source["power_state"])
        clone = self._new_vm(name, source["is_a_template"], source["other_config"])
        for vbd in source["VBDs"]:  # xapi clones the disks too
            record = self.state.vbds[vbd]
            vdi = self.state.vdis[record["VDI"]]
            copy = self.x_VDI_create({"name_label": vdi["name_label"], "SR": vdi["SR"],
                                      "virtual_size": str(vdi["virtual_size"]), "type": vdi["type"],
                                      "sharable": False, "read_only": False,
                                      "other_config": dict(vdi["other_config"])})
            self._new_vbd(clone, copy, record["userdevice"])
        for vif in source["VIFs"]:
            self.x_VIF_create({**self.state.vifs[vif], "VM": clone})
        return clone

    def x_VM_get_other_config(self, ref: str) -> dict[str, str]:
        return dict(self._get(self.state.vms, ref)["other_config"])

    def x_VM_get_metrics(self, ref: str) -> str:
        return str(self._get(self.state.vms, ref)["metrics"])

    def x_VM_metrics_get_start_time(self, ref: str) -> xmlrpc.client.DateTime:
        for vm in self.state.vms.values():
            if vm["metrics"] == ref:
                return xmlrpc.client.DateTime(vm["start_time"])
        raise XapiFailure("HANDLE_INVALID", "VM_metrics", ref)

    def x_VM_get_uuid(self, ref: str) -> str:
        return str(self._get(self.state.vms, ref)["uuid"])

    def x_VM_get_by_uuid(self, uuid: str) -> str:
        return self._by_uuid(self.state.vms, uuid)

    def x_VM_get_is_a_template(self, ref: str) -> bool:
        return bool(self._get(self.state.vms, ref)["is_a_template"])

    def x_VM_get_power_state(self, ref: str) -> str:
        return str(self._get(self.state.vms, ref)["power_state"])

    def x_VM_get_VBDs(self, ref: str) -> list[str]:
        return list(self._get(self.state.vms, ref)["VBDs"])

    def x_VM_get_VIFs(self, ref: str) -> list[str]:
        return list(self._get(self.state.vms, ref)["VIFs"])

    def x_VM_remove_from_other_config(self, ref: str, key: str) -> str:
        self._get(self.state.vms, ref)["other_config"].pop(key, None)
        return ""

    def x_VM_add_to_other_config(self, ref: str, key: str, value: str) -> str:
        config = self._get(self.state.vms, ref)["other_config"]
        if key in config:
            raise XapiFailure("MAP_DUPLICATE_KEY", "VM", "other_config", ref, key)
        config[key] = value
        self._event("vm", "mod", ref)
        return ""

    def x_VM_provision(self, ref: str) -> str:
        vm = self._get(self.state.vms, ref)
        if not vm["is_a_template"]:
            raise XapiFailure("VM_IS_NOT_A_TEMPLATE", ref)
        if "disks" in vm["other_config"]:  # the template's own disks would be created here
            raise XapiFailure("PROVISION_FAILED_OUT_OF_SPACE")
        vm["provisioned"] = True
        return ""

    def x_VM_set_is_a_template(self, ref: str, value: bool) -> str:
        self._get(self.state.vms, ref)["is_a_template"] = value
        self._event("vm", "mod", ref)
        return ""

    def x_VM_hard_shutdown(self, ref: str) -> str:
        self._get(self.state.vms, ref)["power_state"] = "Halted"
        self._event("vm", "mod", ref)
        return ""

    def x_VM_destroy(self, ref: str) -> str:
        vm = self._get(self.state.vms, ref)
        if vm["power_state"] != "Halted":
            raise XapiFailure("VM_BAD_POWER_STATE", ref, "Halted", vm["power_state"])
        for vbd in list(vm["VBDs"]):
            self.x_VBD_destroy(vbd)
        for vif in list(vm["VIFs"]):
            self.x_VIF_destroy(vif)
        del self.state.vms[ref]
        self._event("vm", "del", ref, {})
        return ""

    # VBD and VIF
    def x_VBD_create(self, record: dict[str, Any]) -> str:
        self._required(record, VBD_FIELDS, "VBD")
        vm = self._get(self.state.vms, record["VM"])
        vdi = self._get(self.state.vdis, record["VDI"])
        if any(self.state.vbds[b]["userdevice"] == record["userdevice"] for b in vm["VBDs"]):
            raise XapiFailure("DEVICE_ALREADY_EXISTS", record["userdevice"])
        ref = _ref()
        self.state.vbds[ref] = dict(record)
        vm["VBDs"].append(ref)
        vdi["VBDs"].append(ref)
        return ref

    def _new_vbd(self, vm: str, vdi: str, userdevice: str) -> str:
        return self.x_VBD_create({"VM": vm, "VDI": vdi, "userdevice": userdevice, "bootable": True,
                                  "mode": "RW", "type": "Disk", "unpluggable": False, "empty": False,
                                  "other_config": {}, "qos_algorithm_type": "",
                                  "qos_algorithm_params": {}})

    def x_VBD_get_userdevice(self, ref: str) -> str:
        return str(self._get(self.state.vbds, ref)["userdevice"])

    def x_VBD_get_VDI(self, ref: str) -> str:
        return str(self._get(self.state.vbds, ref)["VDI"])

    def x_VBD_get_type(self, ref: str) -> str:
        return str(self._get(self.state.vbds, ref)["type"])

    def x_VBD_destroy(self, ref: str) -> str:
        vbd = self.state.vbds.pop(ref, None)
        if vbd is None:
            raise XapiFailure("HANDLE_INVALID", "VBD", ref)
        for table, key in ((self.state.vms, "VM"), (self.state.vdis, "VDI")):
            owner = table.get(vbd[key])
            if owner is not None and ref in owner["VBDs"]:
                owner["VBDs"].remove(ref)
        return ""

    def x_VIF_create(self, record: dict[str, Any]) -> str:
        self._required(record, VIF_FIELDS, "VIF")
        vm = self._get(self.state.vms, record["VM"])
        self._get(self.state.networks, record["network"])
        ref = _ref()
        self.state.vifs[ref] = dict(record)
        vm["VIFs"].append(ref)
        return ref

    def x_VIF_get_device(self, ref: str) -> str:
        return str(self._get(self.state.vifs, ref)["device"])

    def x_VIF_destroy(self, ref: str) -> str:
        vif = self.state.vifs.pop(ref, None)
        if vif is None:
            raise XapiFailure("HANDLE_INVALID", "VIF", ref)
        vm = self.state.vms.get(vif["VM"])
        if vm is not None and ref in vm["VIFs"]:
            vm["VIFs"].remove(ref)
        return ""

    # events
    def _event(self, cls: str, operation: str, ref: str, snapshot: dict[str, Any] | None = None) -> None:
        with self.changed:
            record = snapshot if snapshot is not None else self._snapshot(ref)
            self.state.events.append((len(self.state.events) + 1, cls, operation, ref, record))
            self.changed.notify_all()

    def _snapshot(self, ref: str) -> dict[str, Any]:
        vm = self.state.vms[ref]
        return {k: vm[k] for k in ("uuid", "name_label", "power_state", "is_a_template")}

    def _event_from(self, classes: list[str], token: str, timeout: float) -> dict[str, Any]:
        if [c.lower() for c in classes] != ["vm"]:
            raise XapiFailure("EVENT_SUBSCRIPTION_PARSE_FAILURE", ",".join(classes))
        with self.changed:
            self.state.event_calls += 1
            if token == "":  # the current state of every VM
                events = [{"id": "0", "class": "vm", "operation": "add", "ref": r,
                           "snapshot": self._snapshot(r)} for r in self.state.vms]
                return {"events": events, "token": str(len(self.state.events)),
                        "valid_ref_counts": {}}
            if not token.isdigit() or int(token) > len(self.state.events):
                raise XapiFailure("EVENT_FROM_TOKEN_INVALID", token)
            since = int(token)
            self.changed.wait_for(lambda: len(self.state.events) > since, timeout=float(timeout))
            events = [{"id": str(i), "class": c, "operation": op, "ref": r, "snapshot": s}
                      for i, c, op, r, s in self.state.events[since:]]
            return {"events": events, "token": str(len(self.state.events)), "valid_ref_counts": {}}

    # ------------------------------------------------------------ PUT /import_raw_vdi
    def import_raw_vdi(self, handler: SimpleXMLRPCRequestHandler) -> None:
        parts = urlsplit(handler.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}

        def answer(status: int, text: str) -> None:
            handler.send_response(status)
            handler.send_header("Content-Length", str(len(text)))
            handler.end_headers()
            handler.wfile.write(text.encode())

        with self.lock:
            self.state.puts += 1
            if parts.path != "/import_raw_vdi":
                return answer(404, "no such handler")
            if query.get("session_id") not in self.state.sessions:
                return answer(401, "session_id missing or invalid")
            task = self.state.tasks.get(query.get("task_id", ""))
            vdi = self.state.vdis.get(query.get("vdi", ""))
            if task is None or vdi is None:
                return answer(400, "task_id or vdi missing or invalid")
            redirect, self.state.redirect_import = self.state.redirect_import, False
            if not redirect:
                fail, cut = self.state.fail_import, self.state.cut_upload_at
                self.state.fail_import = None
                if cut is not None:
                    self.state.cut_uploads -= 1
                    if self.state.cut_uploads <= 0:
                        self.state.cut_upload_at = None
        length = handler.headers.get("Content-Length")
        if redirect:  # another host sees the SR: answered before the body, which is discarded
            self.state.redirects += 1
            handler.send_response(302)
            handler.send_header("Location", f"{self.url}{handler.path}")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            handler.wfile.flush()
            _discard(handler, int(length) if length and length.isdigit() else 0)
            handler.close_connection = True
            return None
        if query.get("format", "raw").lower() != "vhd":
            task.update(status="failure", error_info=["INTERNAL_ERROR", "Unknown format"])
            return answer(404, "unknown format")
        if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
            return answer(400, "Transfer-Encoding is refused")
        if length is None or not length.isdigit():
            return answer(411, "Content-Length required")
        size = int(length)
        # xapi: 200 with the task before the body (HTTP/1.0, no length: the end is the close)
        handler.protocol_version = "HTTP/1.0"
        handler.send_response(200)
        handler.send_header("task-id", query["task_id"])
        handler.end_headers()
        handler.wfile.flush()
        handler.close_connection = True
        if cut is not None:  # the connection drops mid-body; xapi fails the task
            handler.rfile.read(min(cut, size))
            handler.connection.shutdown(2)
            self._finish(task, ["VDI_IO_ERROR", "Device I/O errors: the connection was lost"])
            return None
        head = handler.rfile.read(min(1024, size))
        body_left = size - len(head)
        tail = b""
        failed = False
        while body_left:
            chunk = handler.rfile.read(min(1 << 20, body_left))
            if not chunk:
                break
            body_left -= len(chunk)
            tail = (tail + chunk)[-512:]
            if fail is not None and not failed and body_left < size // 2:
                failed = True
                self._finish(task, fail)
        if failed:
            return None
        footer = (head + tail)[-512:] if size <= 1024 else tail
        problem = _vhd_problem(head, footer, size, vdi["virtual_size"])
        if body_left or problem:
            self._finish(task, ["VDI_IO_ERROR", problem or "short body"])
            return None
        with self.lock:
            vdi["imported"] = size
            self.state.uploads.append(Upload(query["vdi"], size, struct.unpack(">Q", footer[48:56])[0]))
        self._finish(task, None)
        return None

    def _finish(self, task: dict[str, Any], error: list[str] | None) -> None:
        """The import's outcome, a moment later on a thread of its own (as xapi's task)."""
        def finish() -> None:
            time.sleep(0.05)
            with self.lock:
                if error is None:
                    task.update(status="success", progress=1.0)
                else:
                    task.update(status="failure", error_info=error)

        threading.Thread(target=finish, daemon=True).start()


def _discard(handler: SimpleXMLRPCRequestHandler, size: int) -> None:
    while size > 0:
        chunk = handler.rfile.read(min(1 << 20, size))
        if not chunk:
            return
        size -= len(chunk)


def _vhd_problem(head: bytes, footer: bytes, size: int, vdi_size: int) -> str | None:
    """What is wrong with a dynamic VHD (None: nothing)."""
    if size < 1536 or len(footer) != 512:
        return f"a VHD has at least 1536 bytes, got {size}"
    if head[:8] != b"conectix" or footer[:8] != b"conectix":
        return "no conectix footer (copy at 0 and footer at the end)"
    if head[:512] != footer:
        return "the footer copy at byte 0 differs from the footer"
    if struct.unpack(">I", footer[60:64])[0] != 3:
        return "not a dynamic VHD (disk type is not 3)"
    if head[512:520] != b"cxsparse":
        return "no cxsparse dynamic disk header at byte 512"
    virtual = struct.unpack(">Q", footer[48:56])[0]
    if virtual > vdi_size:
        return f"the VHD's virtual size {virtual} exceeds the VDI's {vdi_size}"
    return None
