"""Typed handles of what a publish creates at a platform, persisted before it is relied on.

Each adapter declares one frozen pydantic model per kind of object it makes (a file, a VM,
an import lease, an uploaded blob) with a class-level ``kind`` (its tag in the store's JSON)
and ``lifetime``:

- ``PARTIAL``: removed when the publish fails or is cancelled; kept once it succeeded (the VM);
- ``STAGING``: removed always, after success too (an upload that only fed an image);
- ``MARK``: a fact to remember, never removed (the watch saw the guest running).

The store keeps them as a JSON list (:func:`dump`), newest last; :func:`load` rebuilds them,
also after a crash, so cleanup is resumable. Removal is the adapter's (``Adapter.remove``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

R = TypeVar("R", bound="Resource")


class Lifetime(enum.Enum):
    PARTIAL = "partial"
    STAGING = "staging"
    MARK = "mark"


class ResourceError(ValueError):
    """A recorded resource cannot be read back (unknown kind, bad fields); names what and where."""


_KINDS: dict[str, type[Resource]] = {}


class Resource(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: ClassVar[str]
    lifetime: ClassVar[Lifetime] = Lifetime.PARTIAL

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if kind is None:
            return
        known = _KINDS.get(kind)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise TypeError(f"resource kind {kind!r} is declared twice ({known}, {cls})")
        _KINDS[kind] = cls

    def describe(self) -> str:
        """What it is, for the user (e.g. "VM win10-1 (vm-42)")."""
        fields = ", ".join(f"{k}={v}" for k, v in self.model_dump(mode="json").items())
        return f"{self.kind} ({fields})"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.model_dump(mode="json")}


def dump(resources: Iterable[Resource]) -> list[dict[str, Any]]:
    return [r.to_json() for r in resources]


#: An adapter's reader of the dict format the store used before resources were typed.
LegacyReader = Callable[[Mapping[str, Any]], list[Resource]]


def load(data: list[Any] | Mapping[str, Any] | None, *, where: str,
         legacy: LegacyReader | None = None) -> list[Resource]:
    """Resources from the store's JSON. ``where`` names the task for error messages; a dict
    (the format before typed resources) is read by the adapter's ``legacy`` reader."""
    if not data:
        return []
    if isinstance(data, Mapping):
        if legacy is None:
            raise ResourceError(f"{where}: resources in the old dict format ({sorted(data)}) and "
                                "the adapter cannot read them")
        return legacy(data)
    out: list[Resource] = []
    for i, item in enumerate(data):
        if not isinstance(item, Mapping) or not isinstance(item.get("kind"), str):
            raise ResourceError(f"{where}: resources[{i}]: expected an object with a 'kind', "
                                f"got {item!r}")
        fields = dict(item)
        kind = fields.pop("kind")
        cls = _KINDS.get(kind)
        if cls is None:
            raise ResourceError(f"{where}: resources[{i}].kind: unknown resource kind {kind!r} "
                                f"(known: {', '.join(sorted(_KINDS))})")
        try:
            out.append(cls.model_validate(fields))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ResourceError(f"{where}: resources[{i}] ({kind}): {problems}") from exc
    return out


def latest(resources: Iterable[Resource], cls: type[R]) -> R | None:
    """The newest recorded resource of this type."""
    found = [r for r in resources if isinstance(r, cls)]
    return found[-1] if found else None
