"""Who may do what on the broker: Mosquitto's dynamic-security plugin, kept in step with
the catalogue.

Roles (ACLs; everything not allowed is denied, anonymous clients are refused):
- `bridge-{serial}`: publish to its own two topics (`…/{serial}/senml` and `…/status`),
  and to Sparkplug B topics whose edge node is `{serial}`. Its client is bound to the
  client id `{serial}`, so no bridge can publish as another or take over another's
  session; a bridge subscribes only to Sparkplug commands to itself and hosts' STATE.
- `wattline-gateway`: subscribe to and receive every bridge topic (plain or `$share/…`),
  and as Sparkplug host every `spBv1.0` topic; publish rebirth requests and its STATE.
- `wattline-simulator`: publish to every bridge topic, SenML and Sparkplug. The simulator stands in for a fleet
  over one connection; a deployment with real bridges need not issue it.
- `admin` (`mosquitto_ctrl dynsec init`'s own role): the plugin's control topic.

`initial_config` writes the plugin's file for a new broker with the service clients (the
embedded broker, tests and docker-compose all start from it). After that the broker's
state is changed only over `$CONTROL/dynamic-security/v1`: `BrokerSync` applies the
catalogue's bridge credentials (wattline/bridge_credentials.py) as they are issued,
rotated or revoked, and reconciles the whole set now and then, so a broker that lost its
state, or a change made while it was down, is put right.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
import paho.mqtt.client as mqtt
import psycopg
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import Counter, Gauge

from ingest.reconnect_guard import LOG_TOPIC, PAUSED, ConnectionWatch, pause_loops, release_due
from wattline import bridge_credentials
from wattline.bridge_credentials import BrokerChange
from wattline.senml import SENML_TOPIC, STATUS_TOPIC
from wattline.service import LoopService
from wattline.settings import Settings
from wattline.sparkplug import NAMESPACE

log = structlog.get_logger("wattline.broker_security")

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
BRIDGE_TOPICS = "wattline/v1/bridges/#"
SPARKPLUG = NAMESPACE
SERVICE_USERS = {"admin": "_wattline-admin", "gateway": "_wattline-gateway", "simulator": "_wattline-simulator"}
PBKDF2_ITERATIONS = 101  # the plugin's own default for clients it creates
CHANGES_PER_PASS = 500

APPLIED = Counter("wattline_broker_credentials_applied_total", "Bridge credential changes applied to the broker",
                  ["change"])
FAILED = Counter("wattline_broker_credentials_failed_total", "Bridge credential changes the broker refused")
PENDING = Gauge("wattline_broker_credentials_pending", "Bridge credential changes not yet applied to the broker")


def _acl(acltype: str, topic: str) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "allow": True}


def sparkplug_acls(edge_node: str) -> list[dict[str, Any]]:
    """An edge node's Sparkplug B topics, in any group: its births, deaths and data (its
    own id in the topic, as its SenML topics carry its serial), and the commands to it and
    the host's STATE that it reads."""
    sends = [f"{SPARKPLUG}/+/{kind}/{edge_node}" for kind in ("NBIRTH", "NDEATH", "NDATA")] + \
            [f"{SPARKPLUG}/+/{kind}/{edge_node}/+" for kind in ("DBIRTH", "DDEATH", "DDATA")]
    reads = [f"{SPARKPLUG}/+/NCMD/{edge_node}", f"{SPARKPLUG}/+/DCMD/{edge_node}/+", f"{SPARKPLUG}/STATE/+"]
    return [_acl("publishClientSend", t) for t in sends] + \
        [_acl(kind, t) for t in reads for kind in ("subscribePattern", "publishClientReceive")]


def bridge_role(serial: str) -> dict[str, Any]:
    return {"rolename": f"bridge-{serial}",
            "acls": [_acl("publishClientSend", SENML_TOPIC.format(bridge=serial)),
                     _acl("publishClientSend", STATUS_TOPIC.format(bridge=serial)), *sparkplug_acls(serial)]}


SERVICE_ROLES: dict[str, dict[str, Any]] = {
    "gateway": {"rolename": "wattline-gateway",
                "acls": [_acl("subscribePattern", BRIDGE_TOPICS), _acl("subscribePattern", "$share/+/" + BRIDGE_TOPICS),
                         _acl("publishClientReceive", BRIDGE_TOPICS),
                         # Sparkplug B's primary host: reads every edge node, asks for rebirths, says its STATE.
                         _acl("subscribePattern", SPARKPLUG + "/#"), _acl("publishClientReceive", SPARKPLUG + "/#"),
                         _acl("publishClientSend", SPARKPLUG + "/+/NCMD/+"),
                         _acl("publishClientSend", SPARKPLUG + "/STATE/+")]},
    "simulator": {"rolename": "wattline-simulator",
                  "acls": [_acl("publishClientSend", SENML_TOPIC.format(bridge="+")),
                           _acl("publishClientSend", STATUS_TOPIC.format(bridge="+")), *sparkplug_acls("+")]},
    # The plugin's control topic, and $SYS (the compose health check reads the broker's uptime).
    "admin": {"rolename": "admin",
              "acls": [_acl(t, CONTROL_TOPIC + "/#") for t in ("publishClientSend", "publishClientReceive",
                                                             "subscribePattern")]
              + [_acl(t, "$SYS/#") for t in ("publishClientReceive", "subscribePattern")]},
}


def _client_entry(username: str, password: str, rolename: str) -> dict[str, Any]:
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS, 64)
    return {"username": username, "password": base64.b64encode(digest).decode(),
            "salt": base64.b64encode(salt).decode(), "iterations": PBKDF2_ITERATIONS,
            "roles": [{"rolename": rolename}]}


def initial_config(passwords: dict[str, str], bridges: Sequence[BrokerChange] = ()) -> bytes:
    """The plugin's file for a new broker: the service clients (`passwords` by service:
    admin, gateway, simulator; one left out is not created), deny-by-default, and
    optionally `bridges`' clients, each bound to its client id under its own role: a
    broker built with thousands of bridges at once, which the control topic makes in
    quadratic time (`change_commands`). The caller records them applied."""
    clients = [_client_entry(SERVICE_USERS[s], pw, SERVICE_ROLES[s]["rolename"]) for s, pw in passwords.items()]
    roles = [SERVICE_ROLES[s] for s in passwords]
    for bridge in bridges:
        if bridge.password is not None:
            role = bridge_role(bridge.username)
            clients.append({**_client_entry(bridge.username, bridge.password, role["rolename"]),
                            "clientid": bridge.username})
            roles.append(role)
    return orjson.dumps({
        "clients": clients, "groups": [], "roles": roles,
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False, "subscribe": False,
                             "unsubscribe": True}}, option=orjson.OPT_INDENT_2)


def write_initial_config(path: Path, passwords: dict[str, str], *, owner: tuple[int, int] | None = None,
                         bridges: Sequence[BrokerChange] = ()) -> bool:
    """Write `initial_config` to `path` (0600, atomically, owned by `owner` if given) unless it
    exists: after a broker's first start the broker owns the file and rewrites it. Returns
    whether it wrote."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(initial_config(passwords, bridges))
    tmp.chmod(0o600)
    if owner is not None:
        os.chown(tmp, *owner)
    tmp.rename(path)
    return True


def service_url(host: str, port: int, service: str, password: str) -> str:
    return f"mqtt://{SERVICE_USERS[service]}:{quote(password, safe='')}@{host}:{port}"


class ControlError(RuntimeError):
    """The broker did not answer a control request (down, refused, timed out)."""


@dataclass(frozen=True)
class Reply:
    command: str
    error: str | None
    data: Any


class DynsecAdmin:
    """A connection to the plugin's control topic; `run` sends commands and waits for their replies."""

    def __init__(self, admin_url: str, *, timeout_s: float = 10.0,
                 on_log: Callable[[bytes], None] | None = None) -> None:
        parts = urlsplit(admin_url)
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._reply: list[Reply] | None = None
        self._answered = threading.Event()
        self._asked = ""  # the request in flight: its correlationData
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                                   client_id=f"wattline-broker-sync-{secrets.token_hex(4)}")
        if parts.username:
            self._client.username_pw_set(parts.username, parts.password)
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *_: subscribed.set()
        topics = [(RESPONSE_TOPIC, 1)]
        if on_log is not None:  # the broker's connection notices (ingest/reconnect_guard.py)
            self._client.message_callback_add(LOG_TOPIC, lambda _c, _u, m: on_log(bytes(m.payload)))
            topics.append((LOG_TOPIC, 0))
        self._client.on_connect = lambda c, *_: c.subscribe(topics)
        try:
            self._client.connect(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=30)
        except OSError as exc:
            raise ControlError(f"broker unreachable: {exc}") from exc
        self._client.loop_start()
        if not subscribed.wait(timeout_s):
            self.close()
            raise ControlError("the broker refused the admin client or did not answer")

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            responses = orjson.loads(message.payload)["responses"]
            # Every admin client reads the one response topic: another's answer is not ours.
            if any(r.get("correlationData") != self._asked for r in responses):
                return
            self._reply = [Reply(r.get("command", ""), r.get("error"), r.get("data")) for r in responses]
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            self._reply = []
        self._answered.set()

    def run(self, commands: Sequence[dict[str, Any]]) -> list[Reply]:
        with self._lock:
            self._answered.clear()
            self._reply = None
            self._asked = secrets.token_hex(8)  # the plugin echoes it in each command's response
            info = self._client.publish(CONTROL_TOPIC, orjson.dumps(
                {"commands": [{**c, "correlationData": self._asked} for c in commands]}), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS or not self._answered.wait(self.timeout_s):
                raise ControlError("the broker did not answer the control request")
            reply: list[Reply] = self._reply or []
            if len(reply) != len(commands):
                raise ControlError(f"{len(commands)} commands, {len(reply)} replies")
            return reply

    def errors(self, commands: Sequence[dict[str, Any]]) -> list[str | None]:
        """`run`, keeping each command's error (None: done)."""
        return [r.error for r in self.run(commands)]


_HARMLESS = ("Client not found", "Role not found", "Role already exists")


def change_commands(change: BrokerChange) -> list[dict[str, Any]]:
    """Replace the bridge's client (deleting it closes a session signed in with the old
    password) under its role, or delete both.

    Mosquitto 2.0 rewrites the plugin's whole file after every command that changes
    something, so a change costs two rewrites whatever it is (a refused command, such as
    deleting a client that is not there, rewrites nothing): at 5,000 bridges a rewrite is
    3 MB, and the fifth thousand new bridges took 72 s to apply, the first 7 s (docs/scaling.md)."""
    role = bridge_role(change.username)
    if change.password is None:
        return [{"command": "deleteClient", "username": change.username},
                {"command": "deleteRole", "rolename": role["rolename"]}]
    return [{"command": "deleteClient", "username": change.username}, {"command": "createRole", **role},
            {"command": "createClient", "username": change.username, "password": change.password,
             "clientid": change.username, "roles": [{"rolename": role["rolename"]}]}]


def apply_changes(conn: psycopg.Connection[Any], admin: DynsecAdmin, changes: Sequence[BrokerChange],
                  *, per_request: int = 50) -> int:
    """Apply changes, `per_request` to a control message; each is recorded applied or failed on
    its own row. Returns how many were applied."""
    applied = 0
    for i in range(0, len(changes), per_request):
        batch = changes[i:i + per_request]
        plans = [change_commands(c) for c in batch]
        replies = admin.run([cmd for plan in plans for cmd in plan])
        at = 0
        for change, plan in zip(batch, plans, strict=True):
            mine, at = replies[at:at + len(plan)], at + len(plan)
            errors = [f"{r.command}: {r.error}" for r in mine if r.error and r.error not in _HARMLESS]
            if errors:
                FAILED.inc()
                bridge_credentials.mark_failed(conn, change, "; ".join(errors))
                log.warning("broker refused a bridge credential", username=change.username, errors=errors)
            else:
                bridge_credentials.mark_applied(conn, change)
                APPLIED.labels("remove" if change.password is None else "set").inc()
                applied += 1
    return applied


def _listed(admin: DynsecAdmin, command: str, key: str, page: int) -> Iterator[dict[str, Any]]:
    """Every entry a verbose list command (listClients, listRoles) gives, a page at a time."""
    offset = 0
    while True:
        reply = admin.run([{"command": command, "verbose": True, "count": page, "offset": offset}])[0]
        if reply.error:
            raise ControlError(f"{command}: {reply.error}")
        entries = (reply.data or {}).get(key, [])
        yield from entries
        offset += len(entries)
        if len(entries) < page:
            return


def bridge_clients(admin: DynsecAdmin, page: int = 1000) -> set[str]:
    """Usernames of the broker's clients that carry their own bridge role (those this module made)."""
    return {c["username"] for c in _listed(admin, "listClients", "clients", page)
            if f"bridge-{c.get('username')}" in {r.get("rolename") for r in c.get("roles", [])}}


def missing_acls(admin: DynsecAdmin, page: int = 1000) -> list[dict[str, Any]]:
    """`addRoleACL` commands that give the broker's service and bridge roles every ACL this
    module's roles have now: a broker set up before a topic was added (Sparkplug B) gets it
    once, and after that this finds nothing. ACLs the broker has beyond ours stay."""
    commands: list[dict[str, Any]] = []
    services = {role["rolename"]: role for role in SERVICE_ROLES.values()}
    for role in _listed(admin, "listRoles", "roles", page):
        name = str(role.get("rolename", ""))
        wanted = services.get(name) or (bridge_role(name.removeprefix("bridge-")) if name.startswith("bridge-")
                                        else None)
        if wanted is None:
            continue
        have = {(acl.get("acltype"), acl.get("topic")) for acl in role.get("acls", [])}
        commands += [{"command": "addRoleACL", "rolename": name, **acl} for acl in wanted["acls"]
                     if (acl["acltype"], acl["topic"]) not in have]
    return commands


def reconcile(conn: psycopg.Connection[Any], admin: DynsecAdmin, key: bytes) -> tuple[int, int]:
    """Make the broker's bridge clients exactly the catalogue's active credentials: re-apply
    missing ones, remove strays; and give every role the ACLs it lacks (`missing_acls`).
    Returns (re-applied, removed)."""
    if upgrades := missing_acls(admin):
        errors = [e for e in admin.errors(upgrades) if e is not None and e != "ACL with this topic already exists"]
        log.info("broker roles given their missing ACLs", acls=len(upgrades), refused=len(errors))
    wanted = {c.username: c for c in bridge_credentials.active(conn, key)}
    present = bridge_clients(admin)
    missing = [c for name, c in wanted.items() if name not in present]
    strays = [BrokerChange(name, 0, None) for name in present - wanted.keys()]
    apply_changes(conn, admin, missing + strays)
    # A client made anew is enabled: the pauses still in force are put back.
    if paused := bridge_credentials.paused(conn):
        admin.run([{"command": "disableClient", "username": name} for name in paused])
    return len(missing), len(strays)


class BrokerSync:
    """One pass: apply pending credential changes; every `reconcile_every_s`, the full set;
    pause bridges that reconnect in a tight loop and release the pauses that ran out."""

    def __init__(self, settings: Settings) -> None:
        if not settings.mqtt_admin_url:
            raise ValueError("WATTLINE_MQTT_ADMIN_URL must be set: the broker's dynamic-security admin client")
        self.admin_url = settings.mqtt_admin_url
        self.key = settings.bridge_credential_key
        self.reconcile_every_s = settings.broker_reconcile_minutes * 60.0
        self.first_pause_s = settings.bridge_pause_s
        self.watch = ConnectionWatch(settings.bridge_max_connects_per_minute)
        self._admin: DynsecAdmin | None = None
        self._reconciled_at = 0.0

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def one_pass(self, conn: psycopg.Connection[Any]) -> bool:
        try:
            if self._admin is None:
                self._admin = DynsecAdmin(self.admin_url, on_log=self.watch.log_line)
            if time.monotonic() - self._reconciled_at > self.reconcile_every_s:
                restored, removed = reconcile(conn, self._admin, self.key)
                self._reconciled_at = time.monotonic()
                if restored or removed:
                    log.info("broker reconciled", restored=restored, removed=removed)
            changes = bridge_credentials.pending(conn, self.key, limit=CHANGES_PER_PASS)
            PENDING.set(len(changes))
            if changes:
                applied = apply_changes(conn, self._admin, changes)
                log.info("bridge credentials applied", applied=applied, refused=len(changes) - applied)
                PENDING.set(len(changes) - applied)
            pause_loops(conn, self.watch, self._admin.errors, first_s=self.first_pause_s)
            release_due(conn, self._admin.errors)
            PAUSED.set(len(bridge_credentials.paused(conn)))
            return len(changes) == CHANGES_PER_PASS  # more may be waiting
        except ControlError:
            self.close()  # reconnect next pass; the changes stay pending
            self._reconciled_at = 0.0  # and reconcile then: the broker may have restarted empty
            raise


def broker_sync_service(settings: Settings) -> LoopService:
    sync = BrokerSync(settings)
    return LoopService("broker-sync", settings.require_database_url(), sync.one_pass,
                       settings.broker_sync_every_s, teardown=sync.close)
