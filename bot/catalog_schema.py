"""The JSON Schema of layerbot.yml, generated from the catalog's pydantic models, for editors
(completion, validation as you type) and for ``layerbot schema``.

It says what the schema cannot: a layer source must exist, a template's layers and connector
must be declared (and be of the right kind), a connector's disk limits. ``layerbot check``
checks those. YAML anchors and merge keys (``<<: *defaults``) are the YAML's business: the
schema describes the document once they are expanded, which is what editors validate.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

import adapters
from bot.catalog import NAME_PATTERN, Layer, RunnerSettings, Template

_CHECKED_ELSEWHERE = (
    "Checked by `layerbot check`, not by this schema: layer sources exist (a directory or a "
    "tar archive), templates name declared layers of the right kind and a declared connector, "
    "and disks fit the connector's limits."
)


def _title(connector_type: str) -> str:
    return "".join(part.capitalize() for part in connector_type.split("-"))


def _connector_union() -> Any:
    """Every installed connector type's settings, chosen by ``type`` (so an editor completes
    and checks the settings of the type written)."""
    # named by type: the adapters' models are all called Config
    models = tuple(create_model(_title(t) + "Connector", __base__=adapters.config_model(t))
                   for t in adapters.known_types())
    if len(models) == 1:
        return models[0]
    from typing import Union

    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007 (a runtime tuple)


def _document_model() -> type[BaseModel]:
    names = {"pattern": f"^{NAME_PATTERN}$"}
    connector = _connector_union()

    def section(value: Any) -> Any:
        # the loader reads an empty section (`layers:`) as none
        return Annotated[dict[str, value] | None, Field(default=None,
                                                       json_schema_extra={"propertyNames": names})]

    return create_model(
        "LayerbotCatalog",
        __config__=ConfigDict(extra="forbid", title="layerbot.yml",
                              json_schema_extra={"description": _CHECKED_ELSEWHERE}),
        layers=section(Layer),
        connectors=section(connector),
        templates=section(Template),
        runner=Annotated[RunnerSettings | None, Field(default=None)],
    )


def catalog_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of layerbot.yml."""
    schema = _document_model().model_json_schema(mode="validation")
    # an unknown or missing type is one clear error, not one per connector type's settings
    by_type = schema["properties"]["connectors"]["anyOf"][0]
    by_type["additionalProperties"] = {
        "type": "object", "required": ["type"],
        "properties": {"type": {"enum": adapters.known_types(), "description": "the connector type"}},
        **by_type["additionalProperties"],
    }
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
