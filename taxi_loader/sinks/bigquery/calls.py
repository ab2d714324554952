"""Every request of the cloud path: bounded in time, retried only where a retry can help, its failure named.

The Google clients retry on their own for two to ten minutes by default, silently: an unreachable endpoint
looked like a hang. Here each request is made with the clients' own retry off and a timeout of its own
(`BigQuerySettings.request_timeout`, the keyword arguments `request` gives); a step (an upload, a bq-load) is
retried as a whole by the `RetryPolicy` the user chose (--retries), each retry logged with what failed; and
what is left is mapped to the exception tree by `google_errors`, the one place that classifies Google's
answers (as dlt does): 429 and 5xx are transient, every other 4xx is configuration (or bad data where the
caller says a 400 is about the data), a network that does not answer is transient.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from taxi_loader.errors import BadData, ConfigError, TaxiLoaderError, TransientError
from taxi_loader.logs import get_logger
from taxi_loader.source import RetryPolicy

if TYPE_CHECKING:
    import tenacity

    from .settings import BigQuerySettings

log = get_logger("taxi_loader")

# BigQuery reports a few passing conditions as 403 (with this reason): they are retried like a 429.
_TRANSIENT_REASONS = {"rateLimitExceeded", "backendError", "internalError"}


def request(settings: BigQuerySettings) -> dict[str, Any]:
    """Keyword arguments for every client call: no hidden retry, an answer within the request timeout."""
    return {"retry": None, "timeout": settings.request_timeout}


def _reason(exc: BaseException) -> str:
    errors = getattr(exc, "errors", None) or [{}]
    first = errors[0] if isinstance(errors[0], dict) else {}
    return str(first.get("reason", ""))


def is_transient(exc: BaseException) -> bool:
    """Whether running the step again can help: the service was busy or failing, or did not answer."""
    import http.client

    import requests
    import urllib3.exceptions
    from google.api_core import exceptions as gexc
    from google.auth.exceptions import TransportError
    from google.resumable_media import DataCorruption

    if isinstance(exc, (gexc.TooManyRequests, gexc.ServerError)) or getattr(exc, "code", None) == 408:
        return True
    if isinstance(exc, gexc.Forbidden) and _reason(exc) in _TRANSIENT_REASONS:
        return True
    # What google-cloud-storage's own retry policy retries: a connection dropped or cut mid-answer, an upload
    # whose checksum did not match.
    return isinstance(
        exc,
        (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            http.client.HTTPException,
            urllib3.exceptions.ProtocolError,
            TransportError,
            DataCorruption,
            ConnectionError,
            TimeoutError,
        ),
    )


def retrying(retry: RetryPolicy, what: str) -> tenacity.Retrying:
    """tenacity retrying of a whole step on transient failures (`is_transient`), each retry logged."""
    import tenacity

    def note(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            f"{what} failed, retrying",
            error=_describe(exc) if exc else "",
            attempt=f"{state.attempt_number + 1} of {retry.attempts}",
            wait_seconds=round(state.next_action.sleep if state.next_action else 0, 1),
        )

    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(retry.attempts),
        wait=tenacity.wait_exponential(multiplier=retry.initial_wait, max=retry.max_wait),
        retry=tenacity.retry_if_exception(is_transient),
        before_sleep=note,
        reraise=True,
    )


def _describe(exc: BaseException) -> str:
    """A failure in one line: Google's message, or the network's (requests' own text is a nested repr)."""
    import requests

    message = getattr(exc, "message", None)
    if message:
        return f"{getattr(exc, 'code', '')} {message}".strip()
    if isinstance(exc, requests.Timeout):
        return "no answer within the request timeout"
    if isinstance(exc, requests.ConnectionError):
        text = str(exc)
        for marker in ("Connection refused", "Name or service not known", "No route to host", "timed out"):
            if marker in text:
                return marker.lower()
        return "connection failed"
    return str(exc) or exc.__class__.__name__


@contextmanager
def google_errors(
    what: str,
    endpoint: str,
    *,
    not_found: str,
    forbidden: str,
    bad_request_is_data: bool = False,
    attempts: int = 1,
) -> Iterator[None]:
    """Map a Google or network failure of `what` to the exception tree, with what to do about it.

    `not_found` and `forbidden` are the hints for a 404 and a 401/403; `endpoint` names where the request went
    when nothing answered. A 400 is configuration unless `bad_request_is_data` (a load job refusing the
    object's contents). Failures of taxi-loader's own (TaxiLoaderError) pass through.
    """
    from google.api_core import exceptions as gexc
    from google.auth.exceptions import GoogleAuthError

    try:
        yield
    except TaxiLoaderError:
        raise
    except gexc.NotFound as exc:
        raise ConfigError(f"{what}: {exc.message}; {not_found}") from None
    except (gexc.Forbidden, gexc.Unauthorized) as exc:
        if is_transient(exc):
            raise TransientError(
                f"{what}: {_describe(exc)} after {attempts} attempt(s); run the command again"
            ) from None
        raise ConfigError(f"{what}: {exc.message}; {forbidden}") from None
    except gexc.BadRequest as exc:
        if bad_request_is_data:  # running it again cannot help
            raise BadData(f"{what}: BigQuery refused the data: {exc.message}") from None
        raise ConfigError(f"{what}: {exc.message}") from None
    except gexc.GoogleAPICallError as exc:
        if is_transient(exc):
            raise TransientError(
                f"{what}: {_describe(exc)} after {attempts} attempt(s); the service is busy or failing, "
                "run the command again"
            ) from None
        raise ConfigError(f"{what}: {_describe(exc)}") from None  # 409, 412 and the other 4xx
    except GoogleAuthError as exc:
        if is_transient(exc):
            raise TransientError(
                f"{what}: cannot reach Google's token service ({exc}); run the command again"
            ) from None
        raise ConfigError(f"{what}: the credentials were refused ({exc}); check GCP_CREDS") from None
    except Exception as exc:
        import requests

        if is_transient(exc):
            raise TransientError(
                f"{what}: {endpoint} did not answer ({_describe(exc)}) after {attempts} attempt(s); check the "
                "network or the endpoint setting, and run the command again"
            ) from None
        if isinstance(exc, requests.RequestException):  # a request that cannot be made: an endpoint setting
            raise ConfigError(f"{what}: cannot send a request to {endpoint} ({exc}); check the endpoint") from None
        raise
