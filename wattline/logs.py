"""Structured logging set-up shared by every service (structlog over the stdlib)."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog


class _CurrentStderr:
    """Writes to whatever sys.stderr is now: a stream captured at configuration time may be
    replaced and closed later (test runners, CLI runners). With WATTLINE_LOG_TEE set, every
    line also goes to that file (the test suite scans it for personal data)."""

    def write(self, text: str) -> int:
        tee = os.environ.get("WATTLINE_LOG_TEE")
        if tee:
            with open(tee, "a", encoding="utf-8") as f:  # noqa: PTH123 - one append per line, any process
                f.write(text)
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_API_TOKEN = re.compile(r"\b(wl_[A-Za-z0-9]{8})\.[A-Za-z0-9_-]+")
_WEBHOOK_SECRET = re.compile(r"whsec_[A-Za-z0-9_-]+")
_PASSWORD_URL = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")
_SECRET_KEYS = {"password", "token", "secret", "api_key", "authorization", "email", "full_name", "phone"}


def scrub(text: str) -> str:
    """Emails, API tokens (all but their public prefix), webhook secrets and passwords in
    URLs are replaced. A second line of defence: code logs user ids, never these."""
    text = _EMAIL.sub("<email>", text)
    text = _API_TOKEN.sub(r"\1.<redacted>", text)
    text = _WEBHOOK_SECRET.sub("whsec_<redacted>", text)
    return _PASSWORD_URL.sub(r"\1<redacted>@", text)


def _scrub_event(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if key.lower() in _SECRET_KEYS:
            event[key] = "<redacted>"
        elif isinstance(value, str):
            event[key] = scrub(value)
    return event


class _ScrubbingFilter(logging.Filter):
    """The same for the stdlib's loggers (uvicorn, werkzeug, psycopg)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage())
        record.args = None
        return True


def configure_logging(json: bool = False, level: int = logging.INFO) -> None:
    """Structured logs to stderr (and the test tee), scrubbed of emails and secrets."""
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        _scrub_event,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*processors, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    tee = os.environ.get("WATTLINE_LOG_TEE")
    root = logging.getLogger()
    if tee and not any(isinstance(h, logging.FileHandler) and h.baseFilename == tee for h in root.handlers):
        root.addHandler(logging.FileHandler(tee, encoding="utf-8"))
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _ScrubbingFilter) for f in handler.filters):
            handler.addFilter(_ScrubbingFilter())
