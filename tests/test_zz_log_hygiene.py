"""Runs last (by name): scans every log line the test run wrote, in this process and in
the gateways, APIs and CLIs it started, for emails, names, passwords, tokens and keys."""

from __future__ import annotations

import re

import pytest
import structlog

from tests.conftest import LOG_TEE
from wattline.accounts import DEMO_PASSWORD
from wattline.logs import configure_logging, scrub

FORBIDDEN = {
    "email address": re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
    "API token secret": re.compile(r"\bwl_[A-Za-z0-9]{8}\.(?!<redacted>)[A-Za-z0-9_-]{8,}"),
    "webhook secret": re.compile(r"whsec_(?!<redacted>)[A-Za-z0-9_-]{8,}"),
    "password in a URL": re.compile(r"://[^:/@\s]+:(?!<redacted>)[^@\s]+@"),
    "the demo password": re.compile(re.escape(DEMO_PASSWORD)),
    "a test password": re.compile(r"\bpw-[AB]\b"),
    "a test person's name": re.compile(r"Ada Lovelace|Grace Hopper"),
}


def test_scrubbing_removes_what_code_might_let_slip(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging()
    structlog.get_logger("t").warning("login failed for ada@example.com", token="wl_AbCd1234.secretpart",
                                      url="postgresql://wattline:hunter2@db/wattline", user_id=7)
    err = capsys.readouterr().err
    assert "ada@example.com" not in err and "secretpart" not in err and "hunter2" not in err
    assert "user_id=7" in err  # pseudonymous ids are what logs carry
    assert scrub("x wl_AbCd1234.s3cr3tvalue y") == "x wl_AbCd1234.<redacted> y"


def test_no_personal_data_or_secret_in_any_log_line_of_the_run() -> None:
    text = LOG_TEE.read_text(encoding="utf-8", errors="replace")
    if "gateway subscribed" not in text:
        pytest.skip("no service logged in this run: run it with the suite (./run test)")
    found = {what: sorted(set(p.findall(text)))[:5] for what, p in FORBIDDEN.items() if p.search(text)}
    assert found == {}, found
