"""Row identity in Python: the twin of the SQL expression in `sinks/postgres/ddl.key_text_sql`.

unique_row_id is the lower-case hex md5 of the key fields rendered as PostgreSQL's CAST(x AS text), with
NULL as the empty string and no separator (the course flow's rule). The k-th exact repeat of a key in one
file gets md5(key_text + '|' + k). Tests compare this module with PostgreSQL over the real samples.
`arrowids.key_texts` is the same rule over columns of Arrow values.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime
from decimal import Decimal
from typing import Any

from taxi_loader.taxis import Kind, TaxiType

REPEAT_SEPARATOR = "|"


def pg_float_text(x: float) -> str:
    """A double as PostgreSQL (12+) prints it: shortest round-trip digits, exponent when < 1e-4 or >= 1e15."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    # repr gives the shortest round-trip digits, as PostgreSQL's float8out does; only the layout differs.
    negative, digits_tuple, exponent = Decimal(repr(x)).as_tuple()
    assert isinstance(exponent, int)  # a finite number (NaN and infinities are handled above)
    digits = "".join(map(str, digits_tuple))
    exp = exponent + len(digits) - 1  # scientific exponent: x = d.ddd * 10**exp
    digits = digits.rstrip("0") or "0"
    sign = "-" if negative else ""
    if exp < -4 or exp >= 15:
        m = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{m}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"
    if exp < 0:
        return f"{sign}0.{'0' * (-exp - 1)}{digits}"
    if len(digits) <= exp + 1:
        return f"{sign}{digits}{'0' * (exp + 1 - len(digits))}"
    return f"{sign}{digits[: exp + 1]}.{digits[exp + 1 :]}"


def pg_timestamp_text(ts: datetime) -> str:
    """A timestamp as PostgreSQL prints it with DateStyle ISO: fraction only when present, trailing zeros cut."""
    text = ts.strftime("%Y-%m-%d %H:%M:%S")
    if len(text) < 19:  # strftime does not pad years below 1000 on every platform
        text = f"{ts.year:04d}" + text[text.index("-") :]
    if ts.microsecond:
        text += f".{ts.microsecond:06d}".rstrip("0")
    return text


def value_text(value: Any, kind: Kind) -> str:
    """One key field's text form; None is ''."""
    if value is None:
        return ""
    if kind is Kind.FLOAT:
        return pg_float_text(float(value))
    if kind is Kind.TIMESTAMP:
        return pg_timestamp_text(value if isinstance(value, datetime) else datetime.fromisoformat(str(value)))
    if kind in (Kind.INT, Kind.CODE):
        return str(int(value))
    return str(value)


def key_text(taxi: TaxiType, row: dict[str, object]) -> str:
    """The concatenated key text of a row given as {column name: value} (canonical strings or typed values)."""
    return "".join(value_text(row.get(f, row.get(f.lower())), taxi.column(f).kind) for f in taxi.key_fields)


def row_id(key: str, occurrence: int = 1) -> str:
    """unique_row_id for the `occurrence`-th row with this key text in one file."""
    text = key if occurrence == 1 else f"{key}{REPEAT_SEPARATOR}{occurrence}"
    return hashlib.md5(text.encode("utf-8")).hexdigest()
