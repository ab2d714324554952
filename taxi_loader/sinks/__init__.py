"""The destinations. Each sink is a package with a class that has the shape of `base.Sink` and a frozen
`Settings` dataclass (its fields, with their metadata, become the command's options).

Adding a sink: a new package beside these, and its class in `SINKS` below (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from taxi_loader.errors import UsageError

from .base import MonthTarget, Sink, SinkClass
from .bigquery import BigQuerySink
from .duckdb import DuckDBSink
from .postgres import PostgresSink

SINKS: dict[str, SinkClass] = {s.name: s for s in (PostgresSink, BigQuerySink, DuckDBSink)}


def make_sink(name: str, options: Mapping[str, Any]) -> Sink:
    """The sink called `name`, with its settings taken from `options` (other sinks' options are ignored)."""
    try:
        kind = SINKS[name]
    except KeyError:
        raise UsageError(f"unknown sink {name!r}; choose one of: {', '.join(SINKS)}") from None
    wanted = {f.name for f in fields(kind.Settings)}
    settings = kind.Settings(**{k: v for k, v in options.items() if k in wanted and v is not None})
    return kind(settings)


__all__ = ["SINKS", "MonthTarget", "Sink", "SinkClass", "make_sink"]
