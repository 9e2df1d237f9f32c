"""Bridge credentials on the real broker (Mosquitto's dynamic-security plugin): issued at
registration through the API, applied by the broker sync, and enforced by the broker. A
bridge publishes only as itself, subscribes to nothing, and is cut off when revoked."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import paho.mqtt.client as mqtt
import psycopg
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from ingest.broker_security import (
    BrokerSync,
    ControlError,
    DynsecAdmin,
    bridge_clients,
    change_commands,
    missing_acls,
    sparkplug_acls,
)
from launcher.localstack import free_port
from sensor_sim.sparkplug import EdgeNode
from tests.factories import Tenant, auth, count, wait_for
from tests.fixtures.gateway import RunningGateway
from wattline import bridge_credentials
from wattline.catalogue import bridge_claim_code
from wattline.senml import SENML_TOPIC, STATUS_TOPIC, encode_pack
from wattline.settings import Settings

NOT_AUTHORISED = 135


@dataclass
class Bridge:
    """A bridge's MQTT session as firmware would hold it: MQTT v5, its own client id, a last will."""

    client: mqtt.Client
    connack: list[int] = field(default_factory=list)
    acks: dict[int, int] = field(default_factory=dict)  # mid -> PUBACK reason code
    subacks: list[int] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1 and return the broker's PUBACK reason code."""
        info = self.client.publish(topic, payload, qos=1)
        wait_for(lambda: info.mid in self.acks, 10)
        return self.acks[info.mid]

    def subscribe(self, topic: str) -> int:
        self.client.subscribe(topic, qos=1)
        wait_for(lambda: bool(self.subacks), 10)
        return self.subacks.pop()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def sign_in(url: str, username: str | None, password: str | None, client_id: str) -> Bridge:
    """Connect and wait for the CONNACK; `connack` holds its reason code (0: accepted)."""
    parts = urlsplit(url)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if username is not None:
        c.username_pw_set(username, password)
    c.will_set(STATUS_TOPIC.format(bridge=client_id), b"offline", qos=1, retain=True)
    b = Bridge(c)
    c.on_connect = lambda _c, _u, _f, rc, _p: b.connack.append(rc.value)
    c.on_publish = lambda _c, _u, mid, rc, _p: b.acks.__setitem__(mid, rc.value)
    c.on_subscribe = lambda _c, _u, _m, rcs, _p: b.subacks.append(
        rcs[0].value if isinstance(rcs[0], ReasonCode) else int(rcs[0]))
    c.on_disconnect = lambda *_: b.disconnected.set()
    c.reconnect_delay_set(60, 60)  # no automatic comeback: a test reconnects on purpose
    c.connect(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=10)
    c.loop_start()
    wait_for(lambda: bool(b.connack) or b.disconnected.is_set(), 10)
    return b


def refused(url: str, username: str | None, password: str | None, client_id: str) -> bool:
    b = sign_in(url, username, password, client_id)
    try:
        return not b.connack or b.connack[0] != 0
    finally:
        b.close()


@pytest.fixture
def sync(database_url: str, mqtt_admin_url: str) -> Iterator[BrokerSync]:
    if not mqtt_admin_url or "_wattline-admin" not in mqtt_admin_url:
        pytest.skip("the environment's broker has no dynamic-security admin")
    s = BrokerSync(Settings(database_url=database_url, mqtt_admin_url=mqtt_admin_url, demo=True))
    yield s
    s.close()


def applied(sync: BrokerSync, db: psycopg.Connection[Any]) -> None:
    """One pass of the sync; every change it found must be applied."""
    sync.one_pass(db)
    assert count(db, """SELECT count(*) FROM bridge_credentials WHERE applied_generation <> generation
                        OR applied_revoked <> (revoked_at IS NOT NULL OR bridge_id IS NULL)""") == 0


def register(client: TestClient, t: Tenant, serial: str) -> tuple[int, dict[str, Any]]:
    code = bridge_claim_code(serial, client.app.state.settings.claim_key)  # type: ignore[attr-defined]
    res = client.post(f"/v1/sites/{t.site_id}/bridges", headers=auth(t.tokens["installer"]),
                      json={"serial": serial, "name": "plant room", "claim_code": code})
    assert res.status_code == 201, res.text
    body = res.json()
    return body["id"], body["mqtt"]


def test_anonymous_and_unknown_clients_are_refused(mqtt_url: str, sync: BrokerSync) -> None:
    assert refused(mqtt_url, None, None, "anon")
    assert refused(mqtt_url, "BR-NOBODY", "guess", "BR-NOBODY")
    user = urlsplit(mqtt_url).username
    assert refused(mqtt_url, user, "not-the-password", "sim-wrong")


def test_registered_bridge_publishes_as_itself_and_nothing_more(
        client: TestClient, tenants: tuple[Tenant, Tenant], db: psycopg.Connection[Any], mqtt_url: str,
        sync: BrokerSync, start_gateway: Any) -> None:
    a, b = tenants
    gw: RunningGateway = start_gateway()
    bridge_id, cred = register(client, a, "BR-A-NEW")
    assert cred["username"] == cred["client_id"] == "BR-A-NEW" and len(cred["password"]) == 32
    assert cred["senml_topic"] == SENML_TOPIC.format(bridge="BR-A-NEW")
    # Shown once: registering again (a rename) issues nothing, and reading it back shows no password.
    assert register(client, a, "BR-A-NEW")[1] is None
    state = client.get(f"/v1/bridges/{bridge_id}/credentials", headers=auth(a.tokens["installer"])).json()
    assert "password" not in state and state["applied"] is False
    applied(sync, db)
    assert client.get(f"/v1/bridges/{bridge_id}/credentials",
                      headers=auth(a.tokens["installer"])).json()["applied"] is True
    # Another tenant's installer cannot read, rotate or revoke it.
    for method in ("get", "post", "delete"):
        res = client.request(method, f"/v1/bridges/{bridge_id}/credentials", headers=auth(b.tokens["installer"]))
        assert res.status_code == 404, (method, res.text)

    me = sign_in(mqtt_url, cred["username"], cred["password"], cred["client_id"])
    try:
        assert me.connack == [0]
        now = time.time()
        assert me.publish(cred["senml_topic"], encode_pack([(a.discovered_serial, now - 1, 3.25)])) in (0, 16)
        # Not as another bridge, not anywhere else, and no subscription at all.
        assert me.publish(SENML_TOPIC.format(bridge=b.bridge_serial),
                          encode_pack([(b.sensor_serial, now - 1, 99.0)])) == NOT_AUTHORISED
        assert me.publish(SENML_TOPIC.format(bridge=a.bridge_serial),
                          encode_pack([(a.sensor_serial, now - 1, 99.0)])) == NOT_AUTHORISED
        assert me.publish("elsewhere/topic", b"x") == NOT_AUTHORISED
        for topic in (SENML_TOPIC.format(bridge=b.bridge_serial), "wattline/v1/bridges/#", "#",
                      "$share/g/wattline/v1/bridges/+/senml"):
            assert me.subscribe(topic) == NOT_AUTHORISED, topic
        # Refused, not cut off (Mosquitto < 2.0.22 with `max_queued_messages 0` dropped it here).
        assert not me.disconnected.is_set()
        assert me.publish(cred["status_topic"], b"online") in (0, 16)
        # Sparkplug B: as its own edge node (any group), never as another; it reads only
        # the commands to itself and the hosts' STATE.
        for topic, payload in EdgeNode("BR-A-NEW", "plant").birth([(a.discovered_serial, 4.75)],
                                                                   int(now * 1000) - 500):
            assert me.publish(topic, payload) in (0, 16), topic
        for topic, payload in EdgeNode(b.bridge_serial, "plant").birth([(b.sensor_serial, 99.0)],
                                                                       int(now * 1000) - 500):
            assert me.publish(topic, payload) == NOT_AUTHORISED, topic
        assert me.subscribe("spBv1.0/plant/NCMD/BR-A-NEW") == 1
        assert me.subscribe("spBv1.0/STATE/+") == 1
        for topic in ("spBv1.0/#", f"spBv1.0/plant/NCMD/{b.bridge_serial}", "spBv1.0/plant/DDATA/+/+"):
            assert me.subscribe(topic) == NOT_AUTHORISED, topic
        assert me.publish("spBv1.0/plant/NCMD/BR-A-NEW", b"") == NOT_AUTHORISED  # only hosts command
    finally:
        me.close()
    # Its password under another client id (to take over another bridge's session) is refused.
    assert refused(mqtt_url, cred["username"], cred["password"], b.bridge_serial)
    wait_for(lambda: count(db, "SELECT count(*) FROM readings WHERE current_a IN (3.25, 4.75)") == 2, 20)
    assert count(db, "SELECT count(*) FROM readings WHERE current_a = 99") == 0
    assert gw.gateway is not None and gw.gateway.health() is not None


def test_rotation_and_revocation_cut_the_old_session_off(
        client: TestClient, tenants: tuple[Tenant, Tenant], db: psycopg.Connection[Any], mqtt_url: str,
        sync: BrokerSync) -> None:
    a, _ = tenants
    installer = auth(a.tokens["installer"])
    bridge_id, first = register(client, a, "BR-A-ROT")
    applied(sync, db)
    live = sign_in(mqtt_url, first["username"], first["password"], first["client_id"])
    assert live.connack == [0]

    res = client.post(f"/v1/bridges/{bridge_id}/credentials", headers=installer)
    assert res.status_code == 201, res.text
    second = res.json()
    assert second["generation"] == 2 and second["password"] != first["password"]
    applied(sync, db)
    assert live.disconnected.wait(10), "the session signed in with the old password is still open"
    live.close()
    assert refused(mqtt_url, first["username"], first["password"], first["client_id"])
    live = sign_in(mqtt_url, second["username"], second["password"], second["client_id"])
    assert live.connack == [0]

    assert client.delete(f"/v1/bridges/{bridge_id}/credentials", headers=installer).status_code == 200
    assert client.delete(f"/v1/bridges/{bridge_id}/credentials", headers=installer).status_code == 404
    applied(sync, db)
    assert live.disconnected.wait(10), "a revoked bridge stayed connected"
    live.close()
    assert refused(mqtt_url, second["username"], second["password"], second["client_id"])
    audit = [r[0] for r in db.execute("SELECT action FROM audit_log WHERE subject_type = 'bridge' "
                                      "AND subject_id = %s ORDER BY id", (str(bridge_id),))]
    assert audit == ["create", "issue_credential", "issue_credential", "revoke_credential"]
    # Re-issued after revocation, it works again.
    third = client.post(f"/v1/bridges/{bridge_id}/credentials", headers=installer).json()
    applied(sync, db)
    assert not refused(mqtt_url, third["username"], third["password"], third["client_id"])


def test_a_deleted_bridge_loses_its_credential(client: TestClient, tenants: tuple[Tenant, Tenant],
                                               db: psycopg.Connection[Any], mqtt_url: str, sync: BrokerSync) -> None:
    a, _ = tenants
    bridge_id, cred = register(client, a, "BR-A-GONE")
    applied(sync, db)
    assert client.delete(f"/v1/bridges/{bridge_id}", headers=auth(a.tokens["installer"])).status_code == 200
    applied(sync, db)
    assert refused(mqtt_url, cred["username"], cred["password"], cred["client_id"])
    assert count(db, "SELECT count(*) FROM bridge_credentials WHERE username = 'BR-A-GONE'") == 0


def test_reconciliation_restores_lost_clients_and_removes_strays(
        db: psycopg.Connection[Any], tenants: tuple[Tenant, Tenant], mqtt_url: str, mqtt_admin_url: str,
        sync: BrokerSync) -> None:
    a, _ = tenants
    key = sync.key
    cred = bridge_credentials.issue(db, None, a.bridge_id, key=key)
    applied(sync, db)
    admin = DynsecAdmin(mqtt_admin_url)
    try:
        # The broker loses the bridge's client (a restored backup, a hand edit), and gains a stray.
        stray = bridge_credentials.BrokerChange("BR-STRAY", 1, "stray-password")
        admin.run(change_commands(bridge_credentials.BrokerChange(cred.username, 1, None)) + change_commands(stray))
        assert refused(mqtt_url, cred.username, cred.password, cred.username)
        sync._reconciled_at = 0.0  # the next pass reconciles
        sync.one_pass(db)
        assert cred.username in bridge_clients(admin) and "BR-STRAY" not in bridge_clients(admin)
    finally:
        admin.close()
    assert not refused(mqtt_url, cred.username, cred.password, cred.username)


def test_reconciliation_gives_roles_made_before_sparkplug_its_topics(
        db: psycopg.Connection[Any], tenants: tuple[Tenant, Tenant], mqtt_url: str, mqtt_admin_url: str,
        sync: BrokerSync) -> None:
    """A broker set up before Sparkplug B: its bridge and gateway roles lack the topics. The
    sync's reconciliation adds them once; a second finds nothing to add."""
    a, _ = tenants
    cred = bridge_credentials.issue(db, None, a.bridge_id, key=sync.key)
    applied(sync, db)
    admin = DynsecAdmin(mqtt_admin_url)
    try:
        old = [{"command": "removeRoleACL", "rolename": f"bridge-{cred.username}", "acltype": acl["acltype"],
                "topic": acl["topic"]} for acl in sparkplug_acls(cred.username)]
        old.append({"command": "removeRoleACL", "rolename": "wattline-gateway", "acltype": "publishClientSend",
                    "topic": "spBv1.0/+/NCMD/+"})
        assert admin.errors(old) == [None] * len(old)
        me = sign_in(mqtt_url, cred.username, cred.password, cred.username)
        try:
            birth = EdgeNode(cred.username, "plant").birth([], int(time.time() * 1000))[0]
            assert me.publish(*birth) == NOT_AUTHORISED
            assert len(missing_acls(admin)) == len(old)
            sync._reconciled_at = 0.0  # the next pass reconciles
            sync.one_pass(db)
            assert missing_acls(admin) == []
            assert me.publish(*birth) in (0, 16)
        finally:
            me.close()
    finally:
        admin.close()


def test_a_broker_that_is_down_delays_changes_and_loses_none(
        db: psycopg.Connection[Any], tenants: tuple[Tenant, Tenant], database_url: str, mqtt_url: str,
        mqtt_admin_url: str, sync: BrokerSync) -> None:
    a, _ = tenants
    parts = urlsplit(mqtt_admin_url)
    dead = mqtt_admin_url.replace(f":{parts.port}", f":{free_port()}")
    down = BrokerSync(Settings(database_url=database_url, mqtt_admin_url=dead, demo=True))
    cred = bridge_credentials.issue(db, None, a.bridge_id, key=down.key)
    with pytest.raises(ControlError):
        down.one_pass(db)
    assert len(bridge_credentials.pending(db, down.key)) == 1  # still waiting, not lost
    applied(sync, db)  # the broker is back
    assert not refused(mqtt_url, cred.username, cred.password, cred.username)


def test_broker_sync_service_applies_within_seconds(
        db: psycopg.Connection[Any], tenants: tuple[Tenant, Tenant], database_url: str, mqtt_url: str,
        mqtt_admin_url: str, sync: BrokerSync) -> None:
    """`wattline broker-sync` as a process: a revocation reaches the broker in seconds."""
    import os

    a, _ = tenants
    port = free_port()
    env = {**os.environ, "WATTLINE_DATABASE_URL": database_url, "WATTLINE_MQTT_ADMIN_URL": mqtt_admin_url,
           "WATTLINE_BROKER_SYNC_HEALTH_PORT": str(port), "WATTLINE_BROKER_SYNC_EVERY_S": "0.5"}
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "broker-sync"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        cred = bridge_credentials.issue(db, None, a.bridge_id, key=sync.key)
        wait_for(lambda: not refused(mqtt_url, cred.username, cred.password, cred.username), 20)
        live = sign_in(mqtt_url, cred.username, cred.password, cred.username)
        started = time.monotonic()
        bridge_credentials.revoke(db, None, a.bridge_id)
        assert live.disconnected.wait(15)
        took = time.monotonic() - started
        live.close()
        assert took < 10, took
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
        assert health["status"] == "ok" and health["errors"] == 0, health
    finally:
        proc.terminate()
        proc.wait(30)


def test_register_without_claim_code_issues_nothing(client: TestClient, tenants: tuple[Tenant, Tenant],
                                                    db: psycopg.Connection[Any]) -> None:
    a, _ = tenants
    res = client.post(f"/v1/sites/{a.site_id}/bridges", headers=auth(a.tokens["installer"]),
                      json={"serial": f"BR-{uuid.uuid4().hex[:6]}", "name": "", "claim_code": "AAAA-AAAA-AAAA"})
    assert res.status_code == 404
    assert count(db, "SELECT count(*) FROM bridge_credentials") == 0


def test_a_bridge_reconnecting_in_a_tight_loop_is_paused_and_no_other(
        client: TestClient, tenants: tuple[Tenant, Tenant], db: psycopg.Connection[Any], mqtt_url: str,
        sync: BrokerSync) -> None:
    """The broker's own connection notices show the loop; the sync disables that bridge's
    client for a while (refused at CONNACK), records and counts it, and enables it after."""
    from prometheus_client import REGISTRY

    a, _ = tenants
    installer = auth(a.tokens["installer"])
    looper_id, looper = register(client, a, "BR-A-LOOP")
    _, steady = register(client, a, "BR-A-STEADY")
    applied(sync, db)  # the sync's admin client now reads the broker's notices
    sync.first_pause_s = 3.0
    pauses_before = REGISTRY.get_sample_value("wattline_broker_bridge_pauses_total") or 0.0
    neighbour = sign_in(mqtt_url, steady["username"], steady["password"], steady["client_id"])
    try:
        assert neighbour.connack == [0]
        for _ in range(sync.watch.limit + 4):  # firmware that reconnects as fast as it can
            assert not refused(mqtt_url, looper["username"], looper["password"], looper["client_id"])
        wait_for(lambda: bool(sync.one_pass(db) or bridge_credentials.paused(db)), 10)
        assert bridge_credentials.paused(db) == ["BR-A-LOOP"]
        assert refused(mqtt_url, looper["username"], looper["password"], looper["client_id"])
        state = client.get(f"/v1/bridges/{looper_id}/credentials", headers=installer).json()
        assert state["paused_until"] is not None and state["pauses"] == 1, state
        assert REGISTRY.get_sample_value("wattline_broker_bridge_pauses_total") == pauses_before + 1
        assert count(db, "SELECT count(*) FROM audit_log WHERE action = 'pause_sign_in' AND subject_id = %s",
                     str(looper_id)) == 1
        # Its neighbour was never touched: still signed in, its packs still accepted.
        assert not neighbour.disconnected.is_set()
        # Accepted (0, or 16: no subscriber here); a refusal would be 135.
        assert neighbour.publish(steady["senml_topic"], encode_pack([("CT-A-1", time.time(), 1.5)])) < 0x80

        time.sleep(sync.first_pause_s)
        sync.one_pass(db)  # the pause ran out: enabled again
        assert bridge_credentials.paused(db) == []
        assert not refused(mqtt_url, looper["username"], looper["password"], looper["client_id"])
        assert client.get(f"/v1/bridges/{looper_id}/credentials", headers=installer).json()["paused_until"] is None
    finally:
        neighbour.close()


def test_a_new_broker_built_with_its_bridges_signs_them_in(tmp_path: Any) -> None:
    """`initial_config(…, bridges=…)`: a broker made with thousands of bridges at once
    (bench fleet) holds each bridge's sign-in, client id and topics, as the sync would."""
    from ingest.broker_security import write_initial_config
    from launcher.localstack import LocalMosquitto

    broker = LocalMosquitto(tmp_path / "mq", free_port())
    write_initial_config(tmp_path / "mq" / "dynamic-security.json", broker.service_passwords(),
                         bridges=[bridge_credentials.BrokerChange("BR-BUILT", 1, "built-password"),
                                  bridge_credentials.BrokerChange("BR-GONE", 1, None)])
    broker.start()
    try:
        url = broker.url_for("gateway")
        me = sign_in(url, "BR-BUILT", "built-password", "BR-BUILT")
        try:
            assert me.connack == [0]
            assert me.publish(SENML_TOPIC.format(bridge="BR-BUILT"), b"[]") < 0x80
            assert me.publish(SENML_TOPIC.format(bridge="BR-OTHER"), b"[]") == NOT_AUTHORISED
        finally:
            me.close()
        assert refused(url, "BR-BUILT", "built-password", "BR-OTHER")  # bound to its client id
        assert refused(url, "BR-GONE", "anything", "BR-GONE")  # a removal makes no client
    finally:
        broker.stop()


def test_admin_clients_each_take_their_own_answers(mqtt_admin_url: str, sync: BrokerSync) -> None:
    """Every admin client reads the plugin's one response topic, so each sees the others'
    answers too; a request takes only the answer that echoes its correlationData (two at
    once once handed each other's: '13 commands, 1 replies', a clean-clone CI failure)."""
    first, second = DynsecAdmin(mqtt_admin_url), DynsecAdmin(mqtt_admin_url)
    one = [{"command": "listRoles", "verbose": False, "count": 1, "offset": 0}]
    many = [{"command": "getRole", "rolename": "wattline-gateway"}] * 13
    failures: list[BaseException] = []

    def hammer(admin: DynsecAdmin, commands: list[dict[str, Any]]) -> None:
        try:
            for _ in range(40):
                replies = admin.run(commands)
                assert [r.command for r in replies] == [c["command"] for c in commands]
        except BaseException as exc:
            failures.append(exc)

    try:
        threads = [threading.Thread(target=hammer, args=(first, one)), threading.Thread(target=hammer,
                                                                                         args=(second, many))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert failures == []
    finally:
        first.close()
        second.close()
