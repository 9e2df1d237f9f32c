"""Authentication that holds: failed sign-ins are throttled per account (whether or not it
exists) and per address, accounts lock with a notice, keys are verified before they are
counted, sessions expire and are pruned, and a login flood cannot exhaust memory."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from launcher.localstack import free_port
from tests.factories import Tenant, auth, count, password_hash, run_cli, wait_for
from tests.fixtures.receivers import SmtpServer
from wattline import accounts
from wattline.accounts import DELAY_AFTER, LOCK_AFTER, create_user
from wattline.domain import Role
from wattline.settings import Settings

PASSWORD = "correct horse battery staple"


@pytest.fixture
def person(db: psycopg.Connection[Any], tenants: tuple[Tenant, Tenant]) -> str:
    a, _ = tenants
    email = f"fm-{uuid.uuid4().hex[:6]}@example.com"
    create_user(db, email=email, password=PASSWORD, role=Role.FACILITY_MANAGER, customer_id=a.customer_id)
    return email


def sign_in(client: TestClient, email: str, password: str) -> httpx.Response:
    res: httpx.Response = client.post("/v1/auth/login", json={"email": email, "password": password})
    return res


def time_passes(db: psycopg.Connection[Any], seconds: float) -> None:
    db.execute("UPDATE login_throttle SET last_failed_at = last_failed_at - make_interval(secs => %s)", (seconds,))


def test_failed_sign_ins_slow_down_then_lock_the_account(client: TestClient, db: psycopg.Connection[Any],
                                                         person: str, database_url: str,
                                                         smtp_server: SmtpServer) -> None:
    for _ in range(DELAY_AFTER):
        assert sign_in(client, person, "wrong").status_code == 401
    throttled = sign_in(client, person, PASSWORD)  # even the right password waits its turn
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1
    for n in range(DELAY_AFTER, LOCK_AFTER):
        time_passes(db, 600)
        assert sign_in(client, person, "wrong").status_code == 401, n
    time_passes(db, 600)
    locked = sign_in(client, person, PASSWORD)
    assert locked.status_code == 429 and "locked" in locked.json()["detail"]
    assert int(locked.headers["retry-after"]) > 600  # 15 minutes
    assert count(db, "SELECT count(*) FROM audit_log WHERE action = 'lock' AND subject_type = 'user'") == 1
    # The notice reaches the owner: the alert service sends the outbox through a real SMTP server.
    result = run_cli("alerts", "--once", env={"WATTLINE_DATABASE_URL": database_url, **smtp_server.env()})
    assert result.exit_code == 0, result.output
    [notice] = smtp_server.messages()
    assert notice["To"] == person and "locked for 15 minutes" in notice["Subject"]
    body = notice.get_body(("plain",))
    assert body is not None and f"{LOCK_AFTER} times in a row" in body.get_content()
    db.execute("UPDATE login_throttle SET locked_until = now() - interval '1 second'")  # the lock runs out
    assert sign_in(client, person, PASSWORD).status_code == 200
    assert count(db, "SELECT count(*) FROM login_throttle") == 0  # a success forgets the failures


def test_an_unknown_email_is_throttled_alike(client: TestClient, person: str) -> None:
    """The same answers whether or not an account exists: no oracle."""
    unknown = "nobody-" + person
    answers = {}
    for email in (person, unknown):
        answers[email] = [sign_in(client, email, "wrong").status_code for _ in range(DELAY_AFTER + 1)]
    assert answers[person] == answers[unknown] == [401] * DELAY_AFTER + [429]
    assert sign_in(client, person, "wrong").json()["detail"] == sign_in(client, unknown, "wrong").json()["detail"]


def test_one_address_cannot_guess_across_accounts(client: TestClient) -> None:
    codes = [sign_in(client, f"guess-{i}@example.com", "wrong").status_code for i in range(accounts.ADDRESS_BURST + 3)]
    assert codes[:accounts.ADDRESS_BURST] == [401] * accounts.ADDRESS_BURST
    assert set(codes[accounts.ADDRESS_BURST:]) == {429}


def test_keys_are_verified_before_they_are_counted(database_url: str, tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    app = create_app(Settings(database_url=database_url), rate_per_s=1, burst=5)
    victim_prefix = a.tokens["viewer"].split(".")[0]
    with TestClient(app, client=("203.0.113.7", 1234)) as attacker, \
            TestClient(app, client=("198.51.100.2", 4321)) as victim:
        # Wrong secrets with the victim's prefix, and random prefixes: the attacker's address pays.
        codes = [attacker.get("/v1/me", headers=auth(f"{victim_prefix}.wrong-{i}")).status_code for i in range(20)]
        codes += [attacker.get("/v1/me", headers=auth(f"wl_{uuid.uuid4().hex[:8]}.x")).status_code
                  for _ in range(20)]
        assert codes[0] == 401 and codes[-1] == 429
        assert victim.get("/v1/me", headers=auth(a.tokens["viewer"])).status_code == 200  # untouched budget
        # A verified key is limited on its own budget.
        statuses = [victim.get("/v1/me", headers=auth(a.tokens["viewer"])).status_code for _ in range(10)]
        assert 429 in statuses


def test_sessions_expire_and_are_pruned(client: TestClient, db: psycopg.Connection[Any], person: str,
                                        database_url: str) -> None:
    token = sign_in(client, person, PASSWORD).json()["token"]
    assert client.get("/v1/me", headers=auth(token)).status_code == 200
    db.execute("UPDATE api_keys SET expires_at = now() - interval '2 days' WHERE session")
    assert client.get("/v1/me", headers=auth(token)).status_code == 401
    from wattline.retention import run_retention

    removed = {r.category: r.rows for r in run_retention(db, Settings(database_url=database_url))}
    assert removed["expired login sessions"] == 1
    assert count(db, "SELECT count(*) FROM api_keys WHERE session") == 0


def test_a_login_flood_stays_within_bounded_memory(database_url: str, db: psycopg.Connection[Any],
                                                   tenants: tuple[Tenant, Tenant], tmp_path: Path) -> None:
    """100 concurrent wrong sign-ins and 50 right ones against a real uvicorn: argon2id's
    64 MiB a hash runs at most `HASH_SLOTS` at a time, so RSS stays under 400 MB."""
    a, _ = tenants
    emails = [f"flood-{i}@example.com" for i in range(50)]
    for email in emails:  # one hash for all fifty (each costs ~0.2 s): the server's work is what is measured
        create_user(db, email=email, password=None, role=Role.VIEWER, customer_id=a.customer_id)
    db.execute("UPDATE users SET password_hash = %s WHERE email = ANY(%s)", (password_hash(PASSWORD), emails))
    port = free_port()
    env = {**os.environ, "WATTLINE_DATABASE_URL": database_url, "WATTLINE_API_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "api"], env=env, stdout=subprocess.DEVNULL,
                            stderr=(tmp_path / "api.log").open("wb"))
    try:
        wait_for(lambda: _ok(f"http://127.0.0.1:{port}/health"), 60)
        process = psutil.Process(proc.pid)
        baseline = process.memory_info().rss
        peak = [baseline]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak.append(process.memory_info().rss)
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        results: list[int] = []
        wrong = [(f"nobody-{i}@example.com", "wrong") for i in range(100)]
        attempts = [pair for i, right in enumerate(emails) for pair in ((right, PASSWORD), *wrong[2 * i:2 * i + 2])]

        def one(email: str, password: str) -> None:
            res = httpx.post(f"http://127.0.0.1:{port}/v1/auth/login", json={"email": email, "password": password},
                             timeout=60)
            results.append(res.status_code)

        threads = [threading.Thread(target=one, args=pair) for pair in attempts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done.set()
        sampler.join()
        peak_mb = max(peak) / 2**20
        print(f"login flood: RSS {baseline / 2**20:.0f} MB before, peak {peak_mb:.0f} MB; "
              f"answers {sorted(set(results))}")
        assert peak_mb < 400, peak_mb
        # Sign-ins that passed are served; the rest are refused up front (429 for the address's
        # failures, 503 when no hashing slot frees up in time), never a crash.
        assert set(results) <= {200, 401, 429, 503} and results.count(200) >= 1, results
    finally:
        proc.terminate()
        proc.wait(30)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(autouse=True)
def fresh_address_budget() -> Iterator[None]:
    """The address budget is per process: each test starts with a full one."""
    accounts.ADDRESS_FAILURES.reset()
    yield
    accounts.ADDRESS_FAILURES.reset()
