"""Realistic synthetic months for tests and the benchmark.

The published files are hundreds of megabytes and nothing here reaches the internet, so tests and
`make bench` generate months with the real shape and the real quirks (data-format.md): `.20` distances,
minimal decimals, exact repeats of a trip (about 0.1%), refund pairs with negated amounts, pickups outside
the month, and a tail of rows with empty VendorID / passenger_count / RatecodeID / payment_type.
"""

from __future__ import annotations

import gzip
import random
from datetime import datetime, timedelta
from pathlib import Path

from taxi_loader.months import Month
from taxi_loader.taxis import TAXI_TYPES


def _money(x: float) -> str:
    # The files write money with minimal decimals: 8, 0.5, 11.8
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return s if s not in ("-0", "") else "0"


def _distance(x: float) -> str:
    s = f"{x:.2f}"
    return s[1:] if s.startswith("0.") else s  # '.20', as the files spell it


def _negate(v: str) -> str:
    return v if v in ("0", "") else v[1:] if v.startswith("-") else "-" + v


def _row(rng: random.Random, taxi: str, start: datetime, tail: bool) -> list[str]:
    pickup = start + timedelta(seconds=rng.randrange(31 * 86400 - 7200))
    if rng.random() < 0.0005:  # a pickup outside the file's month
        pickup = pickup.replace(year=rng.choice((2002, 2008, 2009, 2020, 2090)), day=min(pickup.day, 28))
    dropoff = pickup + timedelta(seconds=rng.randrange(60, 3600))
    dist = round(rng.expovariate(1 / 3.0), 2)
    fare = round(2.5 + dist * 2.5 + rng.random() * 3, 1 if rng.random() < 0.7 else 2)
    tip = round(rng.random() * 4, 2) if rng.random() < 0.6 else 0.0
    total = fare + 0.5 + 0.5 + tip + 0.3 + 2.5
    vendor = "" if tail else str(rng.choice((1, 2, 2)))
    pu, do = str(rng.randrange(1, 266)), str(rng.randrange(1, 266))
    p, d = pickup.strftime("%Y-%m-%d %H:%M:%S"), dropoff.strftime("%Y-%m-%d %H:%M:%S")
    pax = "" if tail else str(rng.choice((1, 1, 1, 2, 3, 5)))
    rate = "" if tail else rng.choice(("1", "1", "1", "2", "5", "99"))
    pay = "" if tail else str(rng.choice((1, 1, 2, 3, 4)))
    flag = "" if tail else rng.choice("NNNNNNNNNY")
    if taxi == "yellow":
        return [
            vendor,
            p,
            d,
            pax,
            _distance(dist),
            rate,
            flag,
            pu,
            do,
            pay,
            _money(fare),
            "0.5",
            "0.5",
            _money(tip),
            "0",
            "0.3",
            _money(total),
            "2.5",
        ]
    if taxi == "green":
        trip_type = "" if tail else "1"
        return [
            vendor,
            p,
            d,
            flag,
            rate,
            pu,
            do,
            pax,
            _distance(dist),
            _money(fare),
            "0.5",
            "0.5",
            _money(tip),
            "0",
            "",
            "0.3",
            _money(total),
            pay,
            trip_type,
            "" if start.year < 2019 else "0",
        ]
    base = f"B{rng.randrange(1, 3000):05d}"
    return [base, p, d, pu if rng.random() < 0.3 else "", do if rng.random() < 0.3 else "", "", base]


def write_month(path: Path, taxi: str, month: Month, rows: int, seed: int = 0, repeat_rate: float = 0.001) -> Path:
    """Write a gzip CSV of `rows` data rows for `taxi` and `month` at `path` and return the path."""
    rng = random.Random(f"{taxi}-{month}-{seed}")
    header = ",".join(c.name for c in TAXI_TYPES[taxi].csv_columns)
    start = datetime(month.year, month.month, 1)
    tail_from = rows - rows // 50  # 2% tail of rows with empty codes, as in 2020-2021 files
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", compresslevel=5, newline="") as out:
        out.write(header + "\n")
        prev: list[str] | None = None
        lines = []
        for i in range(rows):
            if prev is not None and rng.random() < repeat_rate:
                row = prev  # an exact repeat, as the published files have
            elif prev is not None and taxi != "fhv" and rng.random() < 0.002:
                amounts = slice(10, 17) if taxi == "yellow" else slice(9, 17)
                row = [_negate(v) for v in prev[amounts]]  # a refund: the same trip, amounts negated
                row = prev[: amounts.start] + row + prev[amounts.stop :]
            else:
                row = _row(rng, taxi, start, i >= tail_from)
            prev = row
            lines.append(",".join(row))
            if len(lines) >= 50_000:
                out.write("\n".join(lines) + "\n")
                lines = []
        if lines:
            out.write("\n".join(lines) + "\n")
    return path
