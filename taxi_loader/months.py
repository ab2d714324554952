"""Month selection: `--month YYYY-MM`, `--year YYYY --month MM`, or `--trigger-date` (the month before)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

from taxi_loader.errors import UsageError

MIN_YEAR, MAX_YEAR = 2009, 2099
_YM = re.compile(r"^([0-9]{4})-([0-9]{1,2})$")  # ASCII digits: \d would take others int() may not read


@dataclass(frozen=True, order=True)
class Month:
    """A calendar month, the unit of one source file."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not MIN_YEAR <= self.year <= MAX_YEAR:
            raise UsageError(f"invalid year {self.year}: use {MIN_YEAR}..{MAX_YEAR}")
        if not 1 <= self.month <= 12:
            raise UsageError(f"invalid month {self.year}-{self.month:02d}: the month must be 01..12")

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def mm(self) -> str:
        """The month as two digits, as the file names spell it."""
        return f"{self.month:02d}"

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    def next(self) -> Month:
        """The following month."""
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> Month:
        """The month before."""
        return Month(self.year - (self.month == 1), (self.month - 2) % 12 + 1)

    @classmethod
    def parse(cls, text: str) -> Month:
        """Parse 'YYYY-MM'."""
        m = _YM.match(text.strip())
        if not m:
            raise UsageError(f"invalid month {text!r}: use YYYY-MM, e.g. 2021-01")
        return cls(int(m[1]), int(m[2]))


def parse_trigger_date(text: str) -> Month:
    """The month before the date a schedule fired: '2021-02-01T09:00:00Z' gives 2021-01.

    Accepts a date or an ISO date-time with or without a zone; the zone is ignored because the schedules fire
    on the 1st of the month at 09:00 or 10:00 UTC, far from a month boundary in any zone that matters.
    """
    raw = text.strip()
    try:
        day = datetime.fromisoformat(raw.replace("Z", "+00:00")).date()
    except ValueError:
        raise UsageError(
            f"invalid trigger date {text!r}: use an ISO date or date-time, e.g. 2021-02-01T09:00:00Z"
        ) from None
    return Month(day.year, day.month).previous()


def select_month(month: str | None = None, year: int | str | None = None, trigger_date: str | None = None) -> Month:
    """Resolve the three ways of naming a month (the README's "Commands") into one Month."""
    if trigger_date:
        if month or year:
            raise UsageError("give either --trigger-date or --month (with --year), not both")
        return parse_trigger_date(trigger_date)
    if month is None:
        raise UsageError("no month selected: give --month YYYY-MM, --year YYYY --month MM, or --trigger-date DATE")
    if year is not None:
        y = str(year).strip()
        if not re.fullmatch(r"[0-9]{4}", y):
            raise UsageError(f"invalid year {year!r}: use four digits, e.g. 2021")
        m = str(month).strip()
        if not re.fullmatch(r"[0-9]{1,2}", m):
            raise UsageError(f"invalid month {month!r}: with --year, give --month as 1..12 or 01..12")
        return Month(int(y), int(m))
    return Month.parse(str(month))


def month_range(first: Month, last: Month) -> list[Month]:
    """Every month from `first` to `last`, both included."""
    if last < first:
        raise UsageError(f"empty range: --from {first} is after --to {last}")
    out, m = [], first
    while m <= last:
        out.append(m)
        m = m.next()
    return out
