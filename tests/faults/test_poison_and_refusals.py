"""A pack that makes processing fail is rejected with a reason and acked, never redelivered
forever; a database that refuses writes (read-only, or out of disk) holds acks and loses
nothing. Real gateway, broker and database; the full disk is a real one (a tmpfs)."""

from __future__ import annotations

import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ingest import writer
from sensor_sim.publisher import connect
from tests.factories import count, one_circuit_site, stored, wait_for
from tests.fixtures.gateway import RunningGateway
from tests.fixtures.log_hygiene import LOG_TEE
from tests.fixtures.services import Services
from wattline import senml
from wattline.db import database_name
from wattline.senml import SENML_TOPIC

pytestmark = pytest.mark.faults


def pack(serial: str, t: float, amps: float, marker: str = "") -> bytes:
    extra = f',"bu":"{marker}"' if marker else ""
    return f'[{{"bn":"urn:dev:wl:{serial}:","bt":{t}{extra},"n":"current","u":"A","v":{amps}}}]'.encode()


def publish(mqtt_url: str, payloads: list[bytes]) -> None:
    client = connect(mqtt_url, f"BR-1-{time.monotonic_ns()}")
    infos = [client.publish(SENML_TOPIC.format(bridge="BR-1"), p, qos=1) for p in payloads]
    for info in infos:
        info.wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


@pytest.fixture
def poisoned_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """A decoder bug that only one pack triggers (the fault under test is ours: a bug)."""
    decode = senml.decode_pack

    def buggy(payload: bytes, limits: Any) -> Any:
        if b"POISON" in payload:
            raise KeyError("a bug no rule names")
        return decode(payload, limits)

    monkeypatch.setattr(writer, "decode_pack", buggy)


def test_a_pack_that_breaks_decoding_is_rejected_and_acked(
        db: psycopg.Connection[Any], mqtt_url: str, poisoned_decoder: None,
        start_gateway: Callable[..., RunningGateway]) -> None:
    one_circuit_site(db)
    gw = start_gateway(batch_max_seconds=0.5)
    now = time.time()
    publish(mqtt_url, [pack("CT-1", now - 30, 5.0), pack("CT-1", now - 20, 5.0, "POISON"), pack("CT-1", now - 10, 5.0)])
    wait_for(lambda: stored(db) == 2 and count(db, "SELECT count(*) FROM rejected_readings") == 1)
    row = db.execute("SELECT reason, detail, payload FROM rejected_readings").fetchone()
    assert row is not None and row[0] == "processing_error" and row[1].startswith("KeyError")
    assert b"POISON" in row[2]  # kept byte for byte
    # Acked: a restarted gateway on the same session gets nothing redelivered.
    settings = gw.gateway.settings if gw.gateway else None
    gw.stop()
    start_gateway(settings)
    time.sleep(2)
    assert count(db, "SELECT count(*) FROM rejected_readings") == 1 and stored(db) == 2


@pytest.fixture
def refusing_trigger(db: psycopg.Connection[Any]) -> Iterator[None]:
    """Data the database will not take: a reading of 666 A raises in a trigger."""
    db.execute("""CREATE OR REPLACE FUNCTION wl_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
                  BEGIN IF NEW.current_a = 666 THEN RAISE EXCEPTION 'refused by a test trigger'; END IF;
                  RETURN NEW; END $$""")
    db.execute("CREATE TRIGGER wl_test_refuse BEFORE INSERT ON readings FOR EACH ROW EXECUTE FUNCTION wl_test_refuse()")
    yield
    db.execute("DROP TRIGGER wl_test_refuse ON readings")


def test_a_pack_the_database_refuses_is_rejected_alone(
        db: psycopg.Connection[Any], mqtt_url: str, refusing_trigger: None,
        start_gateway: Callable[..., RunningGateway]) -> None:
    one_circuit_site(db)
    start_gateway(batch_max_seconds=1.0)  # one batch: the bad pack fails it, its neighbours are kept
    now = time.time()
    publish(mqtt_url, [pack("CT-1", now - 40 + i * 10, 666.0 if i == 2 else 5.0) for i in range(4)])
    wait_for(lambda: stored(db) == 3 and count(db, "SELECT count(*) FROM rejected_readings") == 1)
    row = db.execute("SELECT reason, detail FROM rejected_readings").fetchone()
    assert row is not None and row[0] == "processing_error" and "RaiseException" in row[1]


def test_a_read_only_database_holds_acks_and_loses_nothing(
        db: psycopg.Connection[Any], database_url: str, mqtt_url: str,
        start_gateway: Callable[..., RunningGateway]) -> None:
    one_circuit_site(db)
    gw = start_gateway(spool_max_bytes=2000)  # a tiny spool: it fills, then acks are held
    name = sql.Identifier(database_name(database_url))

    def kick() -> None:  # the gateway's sessions reconnect and see the database's new mode
        db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                   "AND pid <> pg_backend_pid() AND application_name <> 'pytest'")

    db.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(name))
    try:
        kick()
        now = time.time()
        publish(mqtt_url, [pack("CT-1", now - 200 + i, 5.0) for i in range(100)])
        wait_for(lambda: gw.gateway is not None and gw.gateway.stats.spooled_packs > 0, 30)
        time.sleep(2)
        assert stored(db) == 0
    finally:
        db.execute(sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(name))
    kick()
    wait_for(lambda: stored(db) == 100, 60)  # the spool replays, the broker redelivers what was held
    assert count(db, "SELECT count(*) FROM rejected_readings") == 0


@pytest.fixture
def full_disk(db: psycopg.Connection[Any], services: Services) -> Iterator[Path]:
    """New chunks of `readings` go to a tablespace on a 4 MB tmpfs that a ballast file has
    filled: the server's write-ahead log still has room, the data files have none, as when
    a data volume fills up. Yields the ballast; deleting it frees the disk."""
    if services.postgres is None:
        pytest.skip("needs the tests' own PostgreSQL (WATTLINE_TEST_PG_URL names a server elsewhere)")
    mount = Path(tempfile.mkdtemp(prefix="wattline-full-"))
    mount.chmod(0o755)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    space = mount / "space"
    space.mkdir()
    postgres = pwd.getpwnam("postgres")
    shutil.chown(space, postgres.pw_uid, postgres.pw_gid)
    ballast = mount / "ballast"
    try:
        db.execute(sql.SQL("CREATE TABLESPACE wl_full LOCATION {}").format(sql.Literal(str(space))))
        db.execute("SELECT attach_tablespace('wl_full', 'readings')")
        # Fill what is left; dd stops with ENOSPC, which is the point.
        subprocess.run(["dd", "if=/dev/zero", f"of={ballast}", "bs=64k"], capture_output=True)
        yield ballast
    finally:
        db.execute("SELECT detach_tablespace('wl_full', 'readings', if_attached => true)")
        db.execute("TRUNCATE readings")  # drops the chunks that live on the tmpfs
        db.execute("DROP TABLESPACE IF EXISTS wl_full")
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


def test_an_out_of_disk_database_holds_acks_and_loses_nothing(
        db: psycopg.Connection[Any], mqtt_url: str, full_disk: Path,
        start_gateway: Callable[..., RunningGateway]) -> None:
    one_circuit_site(db)
    gw = start_gateway(spool_max_bytes=2000)
    now = time.time()
    publish(mqtt_url, [pack("CT-1", now - 200 + i, 5.0) for i in range(100)])
    wait_for(lambda: gw.gateway is not None and gw.gateway.stats.spooled_packs > 0, 30)
    time.sleep(2)
    assert stored(db) == 0
    assert count(db, "SELECT count(*) FROM rejected_readings") == 0  # the data was never to blame
    assert "DiskFull" in LOG_TEE.read_text()  # held for the reason under test, not another
    full_disk.unlink()  # an operator frees space; nobody restarts anything
    wait_for(lambda: stored(db) == 100, 60)
    assert count(db, "SELECT count(*) FROM rejected_readings") == 0
    assert count(db, "SELECT count(DISTINCT (sensor_id, ts)) FROM readings") == 100
