"""What a publish will do, per template: the "Review and publish" summary shown by
the CLI and the Slack confirm card alike."""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass, field

import adapters
import compositor
from adapters.base import Adapter, AdapterError
from bot import messages
from bot.catalog import Catalog, Template
from bot.runner.task_steps import image_spec, layer_sources
from bot.store.interface import Store
from bot.store.model import Task


@dataclass(frozen=True)
class PublishPlan:
    template: str
    icon: str
    description: str
    os_layer: str
    app_layers: list[str]
    platform_layer: str | None
    connector: str
    platform: str
    size_gib: int
    filesystem: str
    disk_format: str
    scripts: list[str]
    cache_hit: bool
    #: the connector's runner tags: only a runner having them all works the task
    runner_tags: list[str] = field(default_factory=list)


class PlanError(ValueError):
    """The template cannot be published as configured; the message says why. ``explained``:
    the cause is a configuration or platform problem worded for users; else it is unexpected
    (a bug) and its text is for the log and the CLI, not for a chat channel."""

    def __init__(self, message: str, *, explained: bool = True) -> None:
        super().__init__(message)
        self.explained = explained


#: Errors setting up an adapter that say in words what is wrong with the connector.
_EXPLAINED = (AdapterError, adapters.SDKMissing, adapters.UnknownConnectorType)


def plan(catalog: Catalog, name: str, *, check_cache: bool = True) -> PublishPlan:
    """Raises KeyError (with a did-you-mean message) for an unknown template, PlanError
    when its connector cannot be set up."""
    template = catalog.template(name)
    connector = catalog.connectors[template.connector]
    try:
        adapter = adapters.create(connector)
    except Exception as exc:
        raise PlanError(messages.connector_unusable(template.connector, exc),
                        explained=isinstance(exc, _EXPLAINED)) from exc
    try:
        return _plan(catalog, name, template, adapter, check_cache=check_cache)
    finally:  # a vSphere adapter holds a share of its vCenter session
        adapters.close_blocking(adapter)


def _plan(catalog: Catalog, name: str, template: Template, adapter: Adapter, *,
          check_cache: bool) -> PublishPlan:
    connector = catalog.connectors[template.connector]
    hit = None
    # Looking into the layers (image_spec) is only worth it when a cached image can exist:
    # a layer never built (or changed since) is not read at all while planning.
    cache_dir = catalog.runner.cache_dir
    if check_cache and compositor.digests_known(layer_sources(catalog, template),
                                                cache_dir=cache_dir):
        try:
            spec = image_spec(catalog, template, adapter)
        except compositor.CompositorError:
            pass  # the task fails at compositing, with this error as its message
        else:
            hit = compositor.cache_lookup(spec, cache_dir=cache_dir)
    return PublishPlan(
        template=name,
        icon=template.icon,
        description=template.description,
        os_layer=template.os_layer,
        app_layers=list(template.app_layers),
        platform_layer=template.platform_layer,
        connector=template.connector,
        platform=adapter.platform,
        size_gib=template.disk.size_gib,
        filesystem=template.disk.filesystem,
        disk_format=adapter.disk_format(),
        scripts=[p.name for p in connector.scripts],
        cache_hit=bool(hit),
        runner_tags=list(connector.runner_tags),
    )


def enqueue(
    store: Store,
    p: PublishPlan,
    *,
    requested_by: str,
    channel: str | None = None,
    idempotency_key: str | None = None,
) -> tuple[Task, bool]:
    """Queue one "Publishing Layered Image" task for a plan."""
    return store.create_task(
        template=p.template,
        connector=p.connector,
        platform=p.platform,
        image_name=new_image_name(p.template),
        requested_by=requested_by,
        message=messages.task_created(p.template, requested_by),
        channel=channel,
        idempotency_key=idempotency_key or uuid.uuid4().hex,
        runner_tags=p.runner_tags,
    )


def new_image_name(template: str) -> str:
    """The name of a task's VM/image at the target: the template, the UTC time and a random
    part, so tasks started in the same second (a retry, one template published many times)
    rarely collide; the store makes the name unique if they do. Digits, lowercase hex and
    hyphens only: names most platforms accept as they are."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return messages.image_name(template, f"{stamp}-{secrets.token_hex(3)}")
