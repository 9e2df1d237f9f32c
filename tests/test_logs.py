"""Logs carry ids, never emails, names or secrets: the scrubber, and the session-end scan
of every log line the run wrote (tests/fixtures/log_hygiene.py) on a planted line."""

from __future__ import annotations

import pytest
import structlog

from tests.fixtures.log_hygiene import forbidden_in
from wattline.logs import configure_logging, scrub


def test_scrubbing_removes_what_code_might_let_slip(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging()
    structlog.get_logger("t").warning("login failed for ada@example.com", token="wl_AbCd1234.secretpart",
                                      url="postgresql://wattline:hunter2@db/wattline", user_id=7)
    err = capsys.readouterr().err
    assert "ada@example.com" not in err and "secretpart" not in err and "hunter2" not in err
    assert "user_id=7" in err  # pseudonymous ids are what logs carry
    assert scrub("x wl_AbCd1234.s3cr3tvalue y") == "x wl_AbCd1234.<redacted> y"


def test_the_session_end_scan_finds_what_slipped_through() -> None:
    assert forbidden_in("gateway subscribed user_id=7 key=wl_AbCd1234.<redacted>") == {}
    found = forbidden_in("sent to ada@example.com with wl_AbCd1234.s3cr3tvalue for Ada Lovelace")
    assert set(found) == {"email address", "API token secret", "a test person's name"}
