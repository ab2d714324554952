"""The picture of `status`: a heat strip per taxi and year for a terminal (rich), and a PNG (matplotlib).

Both draw the report `backfill.status()` returns (`{"months", "gaps", "totals", "zones"}`) and nothing else,
so a report read back from `status --format json` draws the same. matplotlib is the optional `[plot]` extra:
it is imported only inside `plot_status`, so the terminal picture and the rest of the CLI work without it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from taxi_loader.errors import ConfigError
from taxi_loader.taxis import TAXI_TYPES

SUCCEEDED = "succeeded"
BROKEN = ("failed", "interrupted")  # the loads a retry should see: marked, not merely "not loaded"
BLOCKS = " ▁▂▃▄▅▆▇█"
GAP, FAILED_MARK, UNKNOWN = "·", "✗", "?"
MONTH_INITIALS = "J F M A M J J A S O N D"
LABEL = 8  # the year column, wide enough for the longest taxi name (fhvhv, yellow) as the header's label

STYLE_BLOCK, STYLE_GAP, STYLE_FAILED = "cyan", "dim", "bold red"


def status_chart(report: dict[str, Any]) -> RenderableType:
    """`status` for a terminal: per taxi, one heat strip per year (Jan..Dec), the year's rows and months loaded,
    the gaps and the formats; then a legend and the zone lookup's line. Fits 80 columns; colour is in rich
    styles only, so a console without colour prints plain text."""
    zones = report.get("zones")
    # The same test as the old table: 0 zones is an empty lookup, as useless as none.
    zone_line = Text(f"zones: {zones} in taxi_zone_lookup" if zones else "zones: not loaded (taxi-loader zones)")
    records = report.get("months") or []
    if not records:
        return Group(Text("nothing loaded yet"), zone_line)
    # One width for every taxi's totals, so that the "rows" columns of all the strips line up.
    year_rows: dict[tuple[str, str], int] = {}
    for r in records:
        if r["status"] == SUCCEEDED:
            key = (r["taxi"], r["month"][:4])
            year_rows[key] = year_rows.get(key, 0) + (r["rows"] or 0)
    width = max((len(f"{n:,}") for n in year_rows.values()), default=1)
    parts: list[RenderableType] = []
    for taxi in _taxi_order(r["taxi"] for r in records):
        mine = {r["month"]: r for r in records if r["taxi"] == taxi}
        gaps = report.get("gaps", {}).get(taxi) or []
        parts.extend(_taxi_lines(taxi, mine, gaps, {y: n for (t, y), n in year_rows.items() if t == taxi}, width))
    legend = Text.assemble(
        (BLOCKS[-1], STYLE_BLOCK),
        " most rows  ",
        (BLOCKS[1], STYLE_BLOCK),
        " fewest  ",
        (GAP, STYLE_GAP),
        " not loaded  ",
        (FAILED_MARK, STYLE_FAILED),
        " failed",
    )
    return Group(*parts, legend, zone_line)


def _taxi_order(names: Iterable[str]) -> list[str]:
    # The order taxi-loader lists its types everywhere else (yellow first); a name it no longer knows goes last.
    present = set(names)
    known = [t for t in TAXI_TYPES if t in present]
    return known + sorted(present - set(known))


def _taxi_lines(
    taxi: str, mine: dict[str, dict[str, Any]], gaps: list[str], year_rows: dict[str, int], width: int
) -> list[Text]:
    loaded = {m: r for m, r in mine.items() if r["status"] == SUCCEEDED}
    # Scaled per taxi: green's months are a tenth of yellow's, and a shared scale would flatten green to ▁.
    top = max((r["rows"] or 0 for r in loaded.values()), default=0)
    span = (min(loaded), max(loaded)) if loaded else None
    years = sorted({int(m[:4]) for m in mine})

    lines = [Text.assemble((f"{taxi:<{LABEL}}", "bold"), (MONTH_INITIALS, "dim"))]
    for year in range(years[0], years[-1] + 1):
        line = Text(f"{year:<{LABEL}}")
        for month in range(1, 13):
            key = f"{year}-{month:02d}"
            line.append_text(_cell(mine.get(key), key, span, top))
            line.append(" " if month < 12 else "")
        count = sum(m.startswith(f"{year}-") for m in loaded)
        total = year_rows.get(str(year), 0)
        line.append(f"  {total:>{width},} rows  {count:>2} month{'s' if count != 1 else ''}")
        lines.append(line)
    indent = " " * LABEL
    lines.append(Text(f"{indent}gaps: {', '.join(_ranges(gaps)) if gaps else 'none'}"))
    formats = [r.get("format") for r in loaded.values()]
    if "parquet" in formats:
        csv, parquet = formats.count("csv"), formats.count("parquet")
        lines.append(Text(f"{indent}{csv} month{'s' if csv != 1 else ''} from CSV, {parquet} from Parquet"))
    return lines


def _cell(record: dict[str, Any] | None, month: str, span: tuple[str, str] | None, top: int) -> Text:
    status = record["status"] if record else None
    if status in BROKEN:
        # Shown even outside the loaded span: a failed first month is exactly what the user must see.
        return Text(FAILED_MARK, STYLE_FAILED)
    if status == SUCCEEDED:
        rows = record["rows"] if record else None
        if rows is None:  # loaded by an earlier version that did not count: no height to give it
            return Text(UNKNOWN, STYLE_BLOCK)
        if rows <= 0 or top <= 0:
            return Text(BLOCKS[0])
        # Linear, but never below ▁: April 2020's 240k rows against 2019's 7M would otherwise vanish.
        level = min(len(BLOCKS) - 1, max(1, round(rows / top * (len(BLOCKS) - 1))))
        return Text(BLOCKS[level], STYLE_BLOCK)
    if span and span[0] < month < span[1]:
        return Text(GAP, STYLE_GAP)
    return Text(" ")


def _ranges(months: list[str]) -> list[str]:
    """['2020-04', '2020-05', '2020-06', '2020-09'] -> ['2020-04..2020-06', '2020-09']."""
    out: list[list[str]] = []
    for m in sorted(months):
        if out and _index(m) == _index(out[-1][-1]) + 1:
            out[-1].append(m)
        else:
            out.append([m])
    return [run[0] if len(run) == 1 else f"{run[0]}..{run[-1]}" for run in out]


def _index(month: str) -> int:
    return int(month[:4]) * 12 + int(month[5:7]) - 1


# ---------------------------------------------------------------- PNG


def plot_status(report: dict[str, Any], path: Path) -> Path:
    """Write `report` as a PNG at `path`: rows loaded per month (millions, or thousands for small tables) over
    time, one line per taxi, breaks at the months not loaded, failed and interrupted months as red crosses on
    the axis. Returns `path`.

    Raises ConfigError when matplotlib (the `[plot]` extra) is not installed, or `path` cannot be written.
    """
    path = Path(path)
    folder = path.parent
    # Checked before drawing, so the message names the folder rather than whatever savefig's backend says.
    if not folder.is_dir():
        raise ConfigError(f"cannot write the plot to {path}: the directory {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the plot to {path}: the directory {folder} is not writable")
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("status --plot needs matplotlib: pip install 'taxi-loader[plot]'") from None
    matplotlib.use("Agg")  # no display is needed or wanted: a CLI on a server, in a container, in CI
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    records = report.get("months") or []
    most = max((r["rows"] or 0 for r in records if r["status"] == SUCCEEDED), default=0)
    scale, unit = (1e6, "millions") if most >= 1e6 else (1e3, "thousands")  # axis labels of a few digits
    fig, ax = plt.subplots(figsize=(10, 5), dpi=120)
    try:
        broken: list[date] = []
        for taxi in _taxi_order(r["taxi"] for r in records):
            mine = {r["month"]: r for r in records if r["taxi"] == taxi}
            loaded = sorted(m for m, r in mine.items() if r["status"] == SUCCEEDED)
            if loaded:
                # Every month of the span, NaN where not loaded: matplotlib breaks the line there.
                span = range(_index(loaded[0]), _index(loaded[-1]) + 1)
                xs = mdates.date2num([_first_day(i) for i in span])  # typed: plot() takes no dates
                ys = [_rows(mine.get(_name(i)), scale) for i in span]
                ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, label=taxi)
            broken += [_first_day(_index(m)) for m, r in mine.items() if r["status"] in BROKEN]
        if broken:
            # One series after the taxis' lines, so the legend lists the taxis first and "failed" once.
            # On the axis (no rows to show) and unclipped, so the cross is not cut in half by it.
            ax.scatter(
                mdates.date2num(broken),
                [0.0] * len(broken),
                marker="x",
                color="red",
                s=60,
                zorder=3,
                clip_on=False,
                label="failed",
            )
        ax.set_title("Rows loaded per month")
        ax.set_ylabel(f"rows ({unit})")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        if records:
            ax.xaxis_date()
            locator = mdates.AutoDateLocator()
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
            ax.legend(loc="best")
        else:
            ax.text(0.5, 0.5, "nothing loaded yet", ha="center", va="center", transform=ax.transAxes)
        fig.tight_layout()
        try:
            fig.savefig(path, format="png")
        except OSError as exc:
            raise ConfigError(f"cannot write the plot to {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)  # pyplot keeps every figure alive otherwise: a long-lived process would leak them
    return path


def _first_day(index: int) -> date:
    return date(index // 12, index % 12 + 1, 1)


def _name(index: int) -> str:
    return f"{index // 12}-{index % 12 + 1:02d}"


def _rows(record: dict[str, Any] | None, scale: float) -> float:
    if not record or record["status"] != SUCCEEDED or record["rows"] is None:
        return float("nan")
    return record["rows"] / scale
