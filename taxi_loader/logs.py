"""Logging and results: structlog for logs, what each command prints on stdout, and Kestra's `::{...}::` protocol.

Formats: `console` (human-readable, for a terminal), `json` (one JSON object per line), `kestra` (levelled
log lines, outputs and counter metrics as Kestra parses them from a container's output). `auto` picks
console on a terminal and json otherwise.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING, Any, TextIO


def _structlog_without_rich():  # noqa: ANN202 (the module itself)
    """structlog, imported as if rich were not installed: it would import rich's traceback machinery at once
    (45 ms of every command's start, which `status` and the terminal display pay for themselves when they
    use rich), only to format exceptions, which its plain formatter does here."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        import structlog
    else:
        sys.modules["rich"] = None  # type: ignore[assignment]  # ImportError for `import rich`, as if absent
        try:
            import structlog
        finally:
            del sys.modules["rich"]
    return structlog


if TYPE_CHECKING:
    import structlog
else:
    structlog = _structlog_without_rich()

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


class _CurrentStderr:
    """sys.stderr as it is at each write (structlog would otherwise keep the stream it was given)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(fmt: str = "auto", level: str = "info", color: bool = True) -> str:
    """Configure structlog for the whole process; return the resolved format. `color`: console lines may be
    coloured (on a terminal only; the CLI turns it off under NO_COLOR)."""
    fmt = resolve_format(fmt)
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    processors: list[Any] = [structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True)]
    renderer: Any
    if fmt == "kestra":
        # Kestra shows stderr lines as ERROR, so levelled lines go to stdout in its protocol.
        renderer, out = _kestra_renderer, sys.stdout
        processors.append(structlog.processors.format_exc_info)  # a bug report needs the traceback itself
    elif fmt == "json":
        renderer, out = structlog.processors.JSONRenderer(), sys.stderr
        processors.append(structlog.processors.format_exc_info)
    else:
        # The stream is looked up at each write: the live progress display redirects sys.stderr to print log
        # lines above itself.
        renderer, out = structlog.dev.ConsoleRenderer(colors=color and sys.stderr.isatty()), _CurrentStderr()
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
    label = " ".join(str(result[k]) for k in ("taxi", "month") if k in result) or str(result.get("table", ""))
    line = f"{step} {label}: {summary}".rstrip(": ") if summary else f"{step} {label}: ok"
    return [f"{line} -> {result['target']}" if result.get("target") else line]


def backfill_month_lines(fmt: str, outcome: dict[str, Any]) -> list[str]:
    """The stdout lines for one month of a backfill as it ends (off a terminal: the CLI draws a bar there)."""
    if fmt == "kestra":
        tags = {"taxi": outcome["taxi"], "month": outcome["month"], "status": outcome["status"]}
        metrics = [
            {"name": "rows", "type": "counter", "value": outcome["rows"] or 0, "tags": tags},
            {"name": "seconds", "type": "timer", "value": outcome["seconds"], "tags": tags},
        ]
        return [kestra_line({"metrics": metrics})]
    if fmt == "json":
        return [json.dumps({"step": "backfill-month", **outcome})]
    o = outcome
    rows = f"{o['rows']:,} rows" if o["rows"] is not None else ""
    return [f"{o['taxi']} {o['month']}: {o['status']} {rows} {o['seconds']:.1f}s {o['error']}".rstrip()]


def backfill_summary_lines(
    fmt: str, outcomes: list[dict[str, Any]], counts: dict[str, int], retry: str | None, bad: list[str]
) -> list[str]:
    """The stdout lines that end a backfill: every month's outcome, the counts per status, what to retry.

    `counts`: months per status; `retry`: the command that retries the `bad` months (TAXI:YYYY-MM)."""
    summary = {k.replace(" ", "_"): v for k, v in counts.items()}
    if fmt == "kestra":
        return [kestra_line({"outputs": {**summary, "failed_months": bad}})]
    if fmt == "json":
        return [json.dumps({"step": "backfill", **summary, "retry": retry})]
    lines = [f"\n{'month':<9}{'taxi':<8}{'rows':>13}  {'status':<14}{'seconds':>8}"]
    for o in outcomes:
        rows = f"{o['rows']:,}" if o["rows"] is not None else "-"
        lines.append(f"{o['month']:<9}{o['taxi']:<8}{rows:>13}  {o['status']:<14}{o['seconds']:>8.1f}")
    lines.append(", ".join(f"{v} {k}" for k, v in counts.items() if v))
    return lines


get_logger = structlog.get_logger
