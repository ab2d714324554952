"""Finding and downloading a month's file: HTTP with retries and resume, or a local mirror."""

from __future__ import annotations

import errno
import fcntl
import os
import string
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import unquote, urlparse, urlunparse

from taxi_loader.errors import BadData, ConfigError, OutsideSource, SourceNotFound, TransientError, UsageError
from taxi_loader.months import Month
from taxi_loader.reader import GZIP_ERRORS, gunzipped
from taxi_loader.taxis import TaxiType

if TYPE_CHECKING:
    import tenacity

# The course's mirror: gzipped CSV, what the course's flows read and what the ids were first checked against.
MIRROR_URL = (
    "https://github.com/DataTalksClub/nyc-tlc-data/releases/download/{taxi}/{taxi}_tripdata_{year}-{month}.csv.gz"
)
# The TLC itself: Parquet, every month since 2009, about two months after the month ends.
TLC_URL = "https://d37ci6vzurychx.cloudfront.net/trip-data/{taxi}_tripdata_{year}-{month}.parquet"
SOURCES = ("auto", "mirror", "tlc")
MIRROR_MONTHS = {taxi: (Month(2019, 1), Month(2021, 7)) for taxi in ("yellow", "green", "fhv")}
TLC_FIRST = {"yellow": Month(2009, 1), "green": Month(2014, 1), "fhv": Month(2015, 1), "fhvhv": Month(2019, 2)}
# The TLC's 2009-2010 yellow files have longitude and latitude instead of zone ids: refused, never misaligned.
TLC_YELLOW_SUPPORTED = Month(2011, 1)
USER_AGENT = "taxi-loader"


@dataclass(frozen=True)
class Source:
    """Where a month's file comes from: `--source` auto|mirror|tlc, or one `--source-url` template for all.

    `auto` reads the course's mirror for the months and types it publishes (so the course's flows and ids
    work as they always did) and the TLC's Parquet for every other month.
    """

    choice: str = "auto"
    url: str | None = None  # --source-url: this template for every month, whatever `choice` says
    mirror_url: str = MIRROR_URL
    tlc_url: str = TLC_URL

    def __post_init__(self) -> None:
        if self.choice not in SOURCES:
            raise UsageError(f"unknown source {self.choice!r}; choose one of: {', '.join(SOURCES)}")
        for option, template in (
            ("--source-url", self.url),
            ("--mirror-url", self.mirror_url),
            ("--tlc-url", self.tlc_url),
        ):
            if template:
                check_template(option, template)

    def which(self, taxi: TaxiType, month: Month) -> str:
        """'mirror' or 'tlc': the source that serves `month` of `taxi`."""
        if self.choice != "auto":
            return self.choice
        first, last = MIRROR_MONTHS.get(taxi.name, (None, None))
        return "mirror" if first is not None and last is not None and first <= month <= last else "tlc"

    def template(self, taxi: TaxiType, month: Month) -> str:
        """The URL or path template of `month`'s file."""
        if self.url:
            return self.url
        return self.mirror_url if self.which(taxi, month) == "mirror" else self.tlc_url

    def check_published(self, taxi: TaxiType, month: Month) -> None:
        """Refuse, before any download, a month the chosen source does not publish (SourceNotFound) or a layout
        taxi-loader does not load (BadData). A --source-url template is the user's own: it is not checked."""
        if self.url:
            return
        if self.which(taxi, month) == "mirror":
            first, last = MIRROR_MONTHS.get(taxi.name, (None, None))
            if first is None or last is None:
                raise OutsideSource(
                    f"{taxi.name} {month}: not published: the course's mirror has no {taxi.name} files; "
                    "use --source tlc"
                )
            if not first <= month <= last:
                raise OutsideSource(
                    f"{taxi.name} {month}: not published: the course's mirror has {taxi.name} {first}..{last}; "
                    "use --source tlc (or auto)"
                )
            return
        if month < TLC_FIRST[taxi.name]:
            raise OutsideSource(
                f"{taxi.name} {month}: not published: the TLC publishes {taxi.name} from {TLC_FIRST[taxi.name]}"
            )
        if taxi.name == "yellow" and month < TLC_YELLOW_SUPPORTED:
            raise BadData(
                f"yellow {month}: the TLC's yellow files of 2009-2010 have another layout (longitude and latitude, "
                f"no zone ids), which taxi-loader does not load; it loads yellow from {TLC_YELLOW_SUPPORTED}"
            )


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a transient failure is retried (exponential backoff, bounded)."""

    attempts: int = 5
    initial_wait: float = 1.0
    max_wait: float = 30.0
    timeout: float = 60.0  # per network operation, seconds
    # A whole download attempt, seconds: a server that sends a byte now and then never trips `timeout`.
    download_deadline: float = 1800.0

    def retrying(self, retry_on: tuple[type[BaseException], ...]) -> tenacity.Retrying:
        import tenacity  # here: it loads asyncio (20 ms of every command's start)

        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=tenacity.wait_exponential(multiplier=self.initial_wait, max=self.max_wait),
            retry=tenacity.retry_if_exception_type(retry_on),
            reraise=True,
        )


PLACEHOLDERS = ("taxi", "year", "month")


def check_template(option: str, template: str) -> None:
    """Refuse a template whose placeholders are not exactly {taxi}, {year} and {month} (no format specs,
    conversions, attribute or index access: they would fail, or read what they should not, when filled in)."""
    try:
        fields = [
            (name, spec, conversion)
            for _, name, spec, conversion in string.Formatter().parse(template)
            if name is not None
        ]
    except ValueError as exc:
        raise UsageError(f"bad {option} template {template!r}: {exc}") from None
    for name, spec, conversion in fields:
        if name not in PLACEHOLDERS or spec or conversion:
            raise UsageError(
                f"bad {option} template {template!r}: {{{name}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}} is not one of {{taxi}}, {{year}}, {{month}}"
            )


def source_location(template: str, taxi: TaxiType, month: Month) -> str:
    """The URL or path of the month's file: `template` with {taxi}, {year} and {month} filled in; or, for a
    local directory, the month's file in it under its published name (.csv.gz, .csv or .parquet)."""
    directory = local_path(template) if "{" not in template else None
    if directory is not None and directory.is_dir():
        stem = f"{taxi.name}_tripdata_{month}"
        found = (directory / f"{stem}{ext}" for ext in (".csv.gz", ".csv", ".parquet"))
        return str(next((p for p in found if p.is_file()), directory / f"{stem}.csv.gz"))
    try:
        return template.format(taxi=taxi.name, year=f"{month.year:04d}", month=month.mm)
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError(
            f"bad --source-url template {template!r}: use {{taxi}}, {{year}} and {{month}} ({exc})"
        ) from None


def redact(location: str) -> str:
    """A URL as it may be stored or shown: its user info (a password) and its query string (a signed URL's
    token) masked; a path as it is."""
    parsed = urlparse(location)
    if parsed.scheme not in ("http", "https"):
        return location
    netloc = parsed.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return urlunparse(parsed._replace(netloc=netloc, query="***" if parsed.query else ""))


def _path_of(location: str) -> str:
    """A location's path, without a query (a signed URL's `?X-Amz-...` hides its file's suffix)."""
    return urlparse(location).path if urlparse(location).scheme in ("http", "https", "file") else location


def local_path(location: str) -> Path | None:
    """The local path a location names (a plain path or a file:// URL), or None for a remote URL."""
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme in ("http", "https"):
        return None
    return Path(location)


def local_name(location: str) -> str:
    """The name the downloaded file keeps in the data dir."""
    return Path(unquote(urlparse(location).path)).name


class _Retryable(Exception):
    """A failure worth another attempt: connection trouble, a timeout, 5xx or 429."""


def fetch(
    taxi: TaxiType,
    month: Month,
    data_dir: Path,
    template: str = MIRROR_URL,
    retry: RetryPolicy = RetryPolicy(),
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Make the month's file available locally and return its path (see `fetch_file`)."""
    location = source_location(template, taxi, month)
    try:
        return fetch_file(location, data_dir, f"{taxi.name} {month}", retry, progress)
    except SourceNotFound as exc:
        raise SourceNotFound(_not_yet(str(exc), month, location)) from None


def fetch_file(
    location: str,
    data_dir: Path,
    what: str,
    retry: RetryPolicy = RetryPolicy(),
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Make the file at `location` (a URL, a local path or a file:// URL) available locally and return its path;
    `what` names it in messages.

    A local path or file:// source is used where it lies (never copied, never deleted by cleanup). An HTTP
    source is downloaded into `data_dir` under a temporary name, resumed with a Range request after a dropped
    connection, checked for size and integrity (gzip, Parquet), then renamed; a complete file already there is
    reused.
    """
    path = local_path(location)
    if path is not None:
        if not path.is_file():
            raise SourceNotFound(f"{what}: no file at {path}")
        if not os.access(path, os.R_OK):
            raise ConfigError(f"{what}: {path} cannot be read by this user: give it read permission")
        return path
    name = local_name(location)
    if not name or urlparse(location).path.endswith("/"):
        raise UsageError(
            f"{what}: {redact(location)} names no file (it ends with '/'): give the file's URL or a template"
        )
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--data-dir {data_dir} cannot hold downloads: {exc.strerror or exc}") from None
    if not data_dir.is_dir():
        raise ConfigError(f"--data-dir {data_dir} is not a directory: name a directory for the downloads")
    target = data_dir / name
    if target.is_file():
        return target
    part = target.with_name(target.name + ".part")
    with _partial(part, what) as out:
        if target.is_file():  # another run of this month finished it while this one waited
            if out.seek(0, os.SEEK_END) == 0 and part.exists() and part.stat().st_size == 0:
                part.unlink(missing_ok=True)  # opened (created) by this run after the other's rename
            return target
        try:
            for attempt in retry.retrying((_Retryable,)):
                with attempt:
                    _download(location, out, part, retry, progress)
        except _Retryable as exc:
            raise TransientError(
                f"{what}: download of {redact(location)} failed after {retry.attempts} attempts ({exc}); "
                "check the network and run the command again (it resumes)"
            ) from None
        except SourceNotFound as exc:
            part.unlink(missing_ok=True)
            raise SourceNotFound(f"{what}: {exc}") from None
        except ConfigError:
            part.unlink(missing_ok=True)  # a full or read-only disk: what was written is of no use
            raise
        try:
            verify(part, location)
        except BadData:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, target)
    return target


@contextmanager
def _partial(part: Path, what: str) -> Iterator[BinaryIO]:
    """The month's partial download, opened for this run alone: never through a symbolic link (a link planted
    in a shared data dir would have its target overwritten), and locked, so that a second run of the same month
    in the same data dir waits for the first instead of writing into the same file."""
    while True:
        try:
            fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigError(
                    f"{what}: {part} is a symbolic link: remove it (downloads never follow links)"
                ) from None
            raise ConfigError(f"{what}: cannot write {part}: {exc.strerror or exc}") from None
        handle = os.fdopen(fd, "r+b")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                handle.close()
                raise ConfigError(f"{what}: cannot lock {part}: {exc.strerror or exc}") from None
            # a filesystem without locks (some network mounts): one run at a time is then up to the user
        try:
            same = os.stat(part, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:  # the run it waited for finished (renamed it) or gave up (removed it)
            same = False
        if same:
            break
        handle.close()
        if part.with_name(part.name.removesuffix(".part")).is_file():
            handle = open(os.devnull, "r+b")  # noqa: SIM115 - nothing left to write: the caller returns the file
            break
    try:
        yield handle
    finally:
        handle.close()


def _not_yet(message: str, month: Month, location: str) -> str:
    """`message`, saying "not published yet" for a recent month of the TLC, which publishes a month about two
    months after it ends (a scheduled run for last month often finds nothing yet)."""
    today = date.today()
    recent = Month(today.year, today.month).previous().previous().previous()
    if _path_of(location).endswith(".parquet") and month >= recent:
        return message.replace(
            "not published:", "not published yet (the TLC publishes a month about two months after it ends):", 1
        )
    return message


def _download(
    url: str, out: BinaryIO, part: Path, retry: RetryPolicy, progress: Callable[[int, int | None], None] | None
) -> None:
    """One attempt: fetch `url` into the open partial file `out`, resuming after what it holds; an attempt that
    outlives `retry.download_deadline` ends (what it got is kept: the next attempt resumes)."""
    # Imported here: they bring ssl and email along (30 ms of every command's start), which a local file and
    # every command that downloads nothing do not need.
    import http.client
    import urllib.error
    import urllib.request

    timeout, deadline = retry.timeout, time.monotonic() + retry.download_deadline
    have = out.seek(0, os.SEEK_END)

    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # we already hold every byte, if what we hold ends where a file ends
            if not _ends_cleanly(out, url):
                raise _Retryable(f"the file does not end with a line ending after {have} bytes") from None
            return
        if exc.code in (429,) or exc.code >= 500:
            raise _Retryable(f"HTTP {exc.code} from {redact(url)}") from None
        if exc.code in (403, 404, 410):
            raise SourceNotFound(f"not published: HTTP {exc.code} for {redact(url)}") from None
        if exc.code in (401, 407):
            raise ConfigError(f"{redact(url)} asks for credentials (HTTP {exc.code}): check the source URL") from None
        if 300 <= exc.code < 400:  # urllib follows redirects; one it gives up on loops or leads nowhere
            raise ConfigError(f"{redact(url)} redirects in a loop (HTTP {exc.code}): check the source URL") from None
        raise SourceNotFound(f"HTTP {exc.code} for {redact(url)}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Retryable(f"{getattr(exc, 'reason', exc)}") from None
    with response:
        resumed = response.status == 206
        length = response.headers.get("Content-Length")
        # A Content-Length that is not a number says nothing: the gzip or Parquet check still guards the end.
        expected = int(length) + (have if resumed else 0) if length is not None and length.isdigit() else None
        if not resumed:
            out.seek(0)
            out.truncate()
        done = have if resumed else 0
        while True:
            try:
                block = response.read1(1 << 20)  # what has arrived: the deadline is checked as it comes
            except (OSError, http.client.HTTPException) as exc:  # resets, timeouts, IncompleteRead
                raise _Retryable(f"connection dropped after {done} bytes ({exc.__class__.__name__})") from None
            if not block:
                break
            _write(out, block, part)
            done += len(block)
            if time.monotonic() > deadline:  # what arrived is kept: the next attempt resumes after it
                raise _Retryable(f"too slow: {done} bytes in {retry.download_deadline:.0f} s (--download-timeout)")
            if progress:
                progress(done, expected)
        _write(out, b"", part)
    if expected is not None and done < expected:
        raise _Retryable(f"connection dropped after {done} of {expected} bytes")
    if not _ends_cleanly(out, url):  # no length announced, or a length shorter than the file: it was cut short
        raise _Retryable(
            f"the file ends mid-line after {done} bytes: the transfer was cut short (a plain CSV must end with a "
            "line ending; gzip it if it has none)"
        )


def _write(out: BinaryIO, block: bytes, part: Path) -> None:
    """Write (and, for an empty block, flush) the download: a failure is the disk's, not the network's."""
    try:
        if block:
            out.write(block)
        else:
            out.flush()
    except OSError as exc:  # full, read-only, gone
        raise ConfigError(f"cannot write the download into {part.parent}: {exc.strerror or exc}") from None


def _ends_cleanly(out: BinaryIO, url: str) -> bool:
    """Whether a download ended where its file ends. A gzip or Parquet file (by its name or its first bytes) is
    checked whole by `verify`; a plain CSV must end with its last line's line ending (every published file
    does): a server that announces no length, or a length shorter than what it sends, is otherwise believed."""
    if _path_of(url).endswith((".gz", ".parquet")):
        return True
    out.seek(0)
    head = out.read(4)
    if head[:2] == b"\x1f\x8b" or head == PARQUET_MAGIC or not head:
        return True
    out.seek(-1, os.SEEK_END)
    return out.read(1) == b"\n"


def verify(path: Path, location: str) -> None:
    """Check that a downloaded file is whole: a Parquet file must have its footer, a .gz must be a complete
    gzip stream, a plain file must not be empty; raises BadData if not."""
    with open(path, "rb") as f:
        head = f.read(4)
    if _path_of(location).endswith(".parquet") or head == PARQUET_MAGIC:
        verify_parquet(path, location)
        return
    if head[:2] != b"\x1f\x8b":
        if _path_of(location).endswith(".gz"):
            with open(path, "rb") as f:
                start = f.read(200).lstrip().lower()
            kind = "an HTML page" if start.startswith((b"<!doctype", b"<html")) else "not gzip data"
            raise BadData(f"{redact(location)}: not a gzipped file (the server sent {kind}); check the source URL")
        if path.stat().st_size == 0:
            raise BadData(f"{redact(location)}: the file is empty")
        return
    try:
        with open(path, "rb") as raw, gunzipped(raw) as f:
            while f.read(1 << 20):
                pass
    except GZIP_ERRORS as exc:
        raise BadData(
            f"{redact(location)}: corrupt or truncated gzip ({exc}); it was removed, download it again"
        ) from None


PARQUET_MAGIC = b"PAR1"


def is_parquet(path: Path) -> bool:
    """Whether `path` holds Parquet: its first four bytes say so (whatever the name), or its name does."""
    with open(path, "rb") as f:
        return f.read(4) == PARQUET_MAGIC or path.suffix == ".parquet"


def verify_parquet(path: Path, location: str) -> None:
    """Check that a Parquet file is whole: the magic bytes at both ends (a file cut short has no footer)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(200)
        f.seek(max(size - 4, 0))
        tail = f.read(4)
    if head[:4] != PARQUET_MAGIC:
        start = head.lstrip().lower()
        kind = "an HTML page" if start.startswith((b"<!doctype", b"<html")) else "something else"
        raise BadData(f"{redact(location)}: not a Parquet file (it holds {kind}); check the source URL")
    if size < 12 or tail != PARQUET_MAGIC:
        raise BadData(f"{redact(location)}: a Parquet file cut short (no footer): the download did not finish")


def remove_downloads(taxi: TaxiType, month: Month, data_dir: Path, template: str) -> list[Path]:
    """Delete the month's downloaded file (and a partial one) from the data dir; never touches a local mirror."""
    location = source_location(template, taxi, month)
    if local_path(location) is not None:
        return []
    removed = []
    target = data_dir / local_name(location)
    for p in (target, target.with_name(target.name + ".part")):
        if p.exists():
            try:
                p.unlink()
            except OSError as exc:
                raise ConfigError(f"cannot remove the download {p}: {exc.strerror or exc}") from None
            removed.append(p)
    return removed
