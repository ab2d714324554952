"""Logging and results: structlog for logs, one summary per step on stdout, and Kestra's `::{...}::` protocol.

Formats: `console` (human-readable, for a terminal), `json` (one JSON object per line), `kestra` (levelled
log lines, outputs and counter metrics as Kestra parses them from a container's output). `auto` picks
console on a terminal and json otherwise.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

import structlog

KESTRA_LEVELS = {
    "debug": "DEBUG",
    "info": "INFO",
    "warning": "WARN",
    "warn": "WARN",
    "error": "ERROR",
    "critical": "ERROR",
    "exception": "ERROR",
}


def resolve_format(fmt: str, stream: TextIO | None = None) -> str:
    """`auto` becomes console on a terminal, json otherwise."""
    if fmt != "auto":
        return fmt
    stream = stream or sys.stderr
    return "console" if hasattr(stream, "isatty") and stream.isatty() else "json"


def kestra_line(payload: dict[str, Any]) -> str:
    """One Kestra protocol line: the whole line is `::{json}::`."""
    return "::" + json.dumps(payload, separators=(",", ":"), default=str) + "::"


def _kestra_renderer(_logger, method: str, event: dict[str, Any]) -> str:
    level = KESTRA_LEVELS.get(method, "INFO")
    message = event.pop("event", "")
    event.pop("timestamp", None)
    event.pop("level", None)
    details = " ".join(f"{k}={v}" for k, v in event.items())
    return kestra_line({"logs": [{"level": level, "message": f"{message} {details}".strip()}]})


def configure(fmt: str = "auto", level: str = "info") -> str:
    """Configure structlog for the whole process; return the resolved format."""
    fmt = resolve_format(fmt)
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    processors: list = [structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True)]
    if fmt == "kestra":
        # Kestra shows stderr lines as ERROR, so levelled lines go to stdout in its protocol.
        renderer, out = _kestra_renderer, sys.stdout
    elif fmt == "json":
        renderer, out = structlog.processors.JSONRenderer(), sys.stderr
    else:
        renderer, out = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()), sys.stderr
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    return fmt


def result_lines(fmt: str, step: str, result: dict[str, Any], tags: dict[str, str]) -> list[str]:
    """The stdout lines for one finished step: a summary line, or Kestra outputs and metrics."""
    counts = {k: v for k, v in result.items() if k.startswith("rows_") and isinstance(v, int)}
    if fmt == "kestra":
        metrics = [{"name": k, "type": "counter", "value": v, "tags": tags} for k, v in counts.items()]
        lines = [kestra_line({"outputs": result})]
        if metrics:
            lines.append(kestra_line({"metrics": metrics}))
        return lines
    if fmt == "json":
        return [json.dumps({"step": step, **result}, default=str)]
    summary = " ".join(f"{k.removeprefix('rows_')}={v}" for k, v in counts.items())
    label = " ".join(str(result[k]) for k in ("taxi", "month") if k in result)
    return [f"{step} {label}: {summary}".rstrip(": ") if summary else f"{step} {label}: ok"]


get_logger = structlog.get_logger
