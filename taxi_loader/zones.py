"""The taxi zone lookup: which borough and zone each LocationID of the trip tables is.

One small CSV (265 rows: `LocationID,Borough,Zone,service_zone`), published by the TLC and by the course's
mirror, loaded whole into `taxi_zone_lookup` on any sink, replacing what was there in one step. Its text is
kept as written: "N/A" is a zone's name, not a missing value (tlc-parquet.md section 4).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from taxi_loader.errors import BadData
from taxi_loader.reader import INT_RANGE, parse_value
from taxi_loader.taxis import Column, Kind

ZONES_TABLE = "taxi_zone_lookup"
ZONE_COLUMNS = (
    Column("LocationID", Kind.INT, required=True),
    Column("Borough", Kind.TEXT),
    Column("Zone", Kind.TEXT),
    Column("service_zone", Kind.TEXT),
)
TLC_ZONES_URL = "https://d37ci6vzurychx.cloudfront.net/misc/taxi_zone_lookup.csv"
MIRROR_ZONES_URL = "https://github.com/DataTalksClub/nyc-tlc-data/releases/download/misc/taxi_zone_lookup.csv"

Zone = tuple[int, str | None, str | None, str | None]


def read_zones(path: Path) -> list[Zone]:
    """The zones of the lookup file at `path`; raises BadData naming the line when the file is not one."""
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", "replace").lstrip("\ufeff")
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:  # a field longer than csv's limit, say
        raise BadData(f"{path.name}: not a zone lookup ({exc})") from None
    want = [c.name.lower() for c in ZONE_COLUMNS]
    if not rows or [h.strip().lower() for h in rows[0]] != want:
        got = ",".join(rows[0])[:80] if rows else "nothing"
        raise BadData(f"{path.name}: not a zone lookup (the header should be {','.join(want)}, it is {got!r})")
    zones: list[Zone] = []
    seen: set[int] = set()
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(want):
            raise BadData(f"{path.name} line {line}: {len(row)} fields, the header has {len(want)}")
        try:
            location = int(row[0])
        except ValueError:
            raise BadData(f"{path.name} line {line}: LocationID {row[0]!r} is not an integer") from None
        if location not in INT_RANGE:
            raise BadData(f"{path.name} line {line}: LocationID {location} is out of range")
        if location in seen:
            raise BadData(f"{path.name} line {line}: LocationID {location} appears twice")
        seen.add(location)
        # Text as in the trip files (a NUL, which no sink's text holds, dropped); empty is NULL.
        texts = zip(row[1:], ZONE_COLUMNS[1:], strict=True)  # (the field count was checked above)
        borough, zone, service = (parse_value(v, c.kind) or None for v, c in texts)
        zones.append((location, borough, zone, service))
    if not zones:
        raise BadData(f"{path.name}: the zone lookup holds no zones")
    return zones
