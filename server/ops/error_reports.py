"""Unhandled errors reported to Sentry when SENTRY_DSN is set; nothing at all otherwise.

What is reported: bugs only — an exception that no handler maps to an answer
(the 500s; ``BaseHandler.log_exception`` calls ``capture``), one event each,
tagged ``request_id`` so that the event, the client's ``X-Request-ID`` and the
request's log lines can be matched.  Outages (a store away: 503) and client
errors are not bugs and are never reported.

How: ``sentry-sdk`` is an optional extra (``pip install 'points-server[sentry]'``),
imported only when SENTRY_DSN is set.  It starts with *no* default or
auto-enabling integrations: its logging integration would turn the ERROR line
``log_exception`` writes for the same bug into a second event, its tornado
integration would capture the exception once more, and its stdlib one would add
tracing headers to outgoing HTTP requests.  ``capture`` is the one way in.
Events carry no local variables (``include_local_variables=False``): frames
of this service hold the settings (store URLs with passwords) and clients'
payloads, which the SDK's scrubber, matching by key name, would not hide; the
settings' credentials are also left out of their repr.  An event is built on
the loop (milliseconds: only bugs are reported, not every failed request) and
sent by the SDK's own thread; ``close`` sends what is still queued (bounded)
at shutdown.
(The SDK's sender notices a fork and starts a new thread in the child.)

A SENTRY_DSN without the extra is a configuration problem, reported with every
other one (``config.py``, which asks whether the extra is installed without
importing this module: exit 2) — better than a server that runs without the
reports it was asked for.  ``init`` relies on that check having run.

The SDK's client is process-global, so this module's state is too: ``init``
once per process before serving, ``close`` when done (tests close it at
teardown, so nothing leaks into the next test).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.config import Settings

CLOSE_TIMEOUT_S = 2.0

_client: Any = None  # this process's sentry_sdk.Client, between init() and close()


def init(settings: Settings) -> None:
    """Start reporting unhandled errors to SENTRY_DSN; without it, do nothing."""
    global _client
    if settings.sentry_dsn is None:
        return
    import sentry_sdk  # the settings refuse a SENTRY_DSN without it (SENTRY_MISSING)

    close()
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        default_integrations=False,  # also turns off the auto-enabling ones
        auto_enabling_integrations=False,  # (send_default_pii / data_collection: the
        # defaults send no personal data and scrub tokens, passwords and the like)
        environment="production" if settings.prod else "development",
        include_local_variables=False,  # secrets and payloads live in locals
    )
    _client = sentry_sdk.get_client()


def capture(exc_info: tuple[Any, Any, Any], request_id: str | None) -> None:
    """Report one unhandled error (an ``exc_info`` triple), tagged with its request id."""
    if _client is None:
        return
    import sentry_sdk

    sentry_sdk.capture_exception(
        exc_info, tags={"request_id": request_id} if request_id is not None else {})


def close(timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Send what is queued (waiting at most ``timeout_s``), then stop reporting."""
    global _client
    client, _client = _client, None
    if client is None:
        return
    import sentry_sdk

    client.close(timeout=timeout_s)
    sentry_sdk.get_global_scope().set_client(None)
