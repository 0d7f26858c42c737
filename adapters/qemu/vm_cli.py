"""``layerbot vm``: start a task's QEMU VM, follow its console, show its state.

Loaded by the ``layerbot`` group (:class:`bot.cli.commands.LazyGroup`) only when it runs.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from bot.cli.output import EXIT_FAILED, out


def _vm_dir(task_id: str) -> Path:
    from bot.store.task_store import TaskNotFound

    ctx = click.get_current_context().find_root().obj
    store = ctx.store()
    try:
        task = store.get(task_id)
    except TaskNotFound as exc:
        raise click.UsageError(str(exc)) from None
    finally:
        store.close()
    from adapters.base import Published
    from adapters.qemu import Adapter, QemuVm
    from adapters.resources import ResourceError

    vm = None
    if task.published:
        try:
            vm = Published.from_json(task.published, where=f"task {task_id}",
                                     legacy=Adapter.legacy_published).resource
        except ResourceError:
            vm = None  # another platform's published resource
    if not isinstance(vm, QemuVm):
        raise click.UsageError(f"task {task_id} has no QEMU VM (its target is {task.platform}, "
                               f"status {task.status})")
    return vm.vm_dir


def _state_line(vm_dir: Path) -> str:
    from adapters.qemu import vmfiles

    state = vmfiles.read_state(vm_dir)
    if state is None:
        return "created, off (never started)"
    when = datetime.fromtimestamp(float(state.get("at", 0)), UTC).strftime("%Y-%m-%d %H:%M:%S")
    detail = state.get("reason") or state.get("error") or state.get("accel") or ""
    return f"{state['state']} since {when} UTC" + (f" ({detail})" if detail else "")


@click.group()
def vm() -> None:
    """The VMs of tasks published to a QEMU target.

    Example: layerbot vm start t1a2b3c4d
    """


@vm.command()
@click.argument("task_id")
def start(task_id: str) -> None:
    """Start the task's VM in the background (headless, serial console to a log).

    Example: layerbot vm start t1a2b3c4d
    """
    from adapters.base import PlatformError
    from adapters.qemu import vmfiles

    vm_dir = _vm_dir(task_id)
    try:
        vmfiles.start(vm_dir)
    except PlatformError as exc:
        out().print(f"[red]error:[/red] {exc}", soft_wrap=True)
        sys.exit(EXIT_FAILED)
    out().print(f"{vm_dir.name}: {_state_line(vm_dir)}. It runs the connector's scripts and "
                  f"powers off; follow it with: layerbot vm console {task_id}", soft_wrap=True)


@vm.command("console")
@click.argument("task_id")
@click.option("--no-follow", is_flag=True, help="print the log so far and exit")
def console_(task_id: str, no_follow: bool) -> None:
    """Print the VM's serial console, following it until the VM stops.

    Example: layerbot vm console t1a2b3c4d
    """
    from adapters.qemu import vmfiles

    vm_dir = _vm_dir(task_id)
    log = vm_dir / vmfiles.SERIAL_LOG
    out = sys.stdout.buffer
    position = 0
    while True:
        data = b""
        if log.exists():
            with open(log, "rb") as f:
                f.seek(position)
                data = f.read()
            position += len(data)
            out.write(data)
            out.flush()
        state = vmfiles.read_state(vm_dir)
        finished = state is None or state["state"] in (vmfiles.OFF, vmfiles.STOPPED, vmfiles.FAILED)
        if no_follow or (finished and not data):
            break
        time.sleep(0.3)
    click.echo(f"\n[{vm_dir.name}: {_state_line(vm_dir)}]", err=True)


@vm.command()
@click.argument("task_id")
def status(task_id: str) -> None:
    """Show the VM's state and files.

    Example: layerbot vm status t1a2b3c4d
    """
    from adapters.qemu import vmfiles

    vm_dir = _vm_dir(task_id)
    out().print(f"{vm_dir.name}: {_state_line(vm_dir)}")
    out().print(f"  directory {vm_dir}")
    out().print(f"  launcher  {vm_dir / vmfiles.LAUNCHER}")
    out().print(f"  console   {vm_dir / vmfiles.SERIAL_LOG}")
