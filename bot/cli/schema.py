"""``layerbot schema``: the JSON Schema of layerbot.yml on stdout."""

from __future__ import annotations

import click


@click.command()
def schema() -> None:
    """Print the JSON Schema of layerbot.yml.

    Generated from the catalog's models: each connector's settings by its ``type``. Point an
    editor at it (YAML language server: ``# yaml-language-server: $schema=layerbot.schema.json``).

    Example: layerbot schema > layerbot.schema.json
    """
    import json

    from bot.catalog_schema import catalog_schema

    click.echo(json.dumps(catalog_schema(), indent=2))
