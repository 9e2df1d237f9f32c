"""The MQTT ingest gateway.

Back-pressure, on purpose: paho's automatic acks are turned off, and a pack is acked
only once its batch is committed to the database or fsynced to the local spool. We ask
the broker for at most `receive_maximum` unacked packs (MQTT v5 Receive Maximum), but do
not rely on it: Mosquitto 2.0.11 stops honouring it after the first PUBACK (pinned in
tests/faults/test_gateway.py), and an overloaded gateway then buffered without bound
(found by the soak bench: RSS 175 → 409 MiB in 10 min). So the gateway also stops reading
its socket while it holds `receive_maximum` unacked packs or `max_unacked_bytes` of them:
TCP back-pressure, which every broker respects, and which leaves the rest queued in our
persistent session. (It stops after the packet in hand, so it holds at most one pack more,
and up to a READ_CHUNK of bytes not yet decoded.) When the database is down and the spool
is full, the gateway stops acking and so stops reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiomqtt
import paho.mqtt.client as mqtt
import psycopg
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest import metrics, sparkplug_host
from ingest.flood import BridgeBuckets
from ingest.packs import BatchResult, RawPack
from ingest.sparkplug_host import SparkplugHost
from ingest.sparkplug_session import SessionKey, SessionState
from ingest.spool import Spool
from ingest.writer import BatchWriter, Prepared
from wattline.senml import Reason, bridge_from_topic
from wattline.service import LoopService, serve_http
from wattline.settings import Settings

log = structlog.get_logger("wattline.gateway")

SENML_FILTER = "wattline/v1/bridges/+/senml"
STATUS_FILTER = "wattline/v1/bridges/+/status"


@dataclass
class GatewayStats:
    """Totals since start, for tests and the shutdown log line."""

    batches: int = 0
    packs: int = 0
    stored: int = 0
    duplicates: int = 0
    spooled_packs: int = 0
    rejected: int = 0
    last_batch_at: float = 0.0
    pending: int = 0
    results: list[BatchResult] = field(default_factory=list, repr=False)


class _MqttClient(aiomqtt.Client):
    """aiomqtt (pinned 2.5.1) whose socket reads can be paused: with the reader removed
    from the event loop, TCP flow control holds the broker back; and whose messages go
    straight to `sink`, in the event loop's thread, as paho decodes them. aiomqtt's own path
    (a Message and a validated Topic per pack, an asyncio queue, a task per `__anext__`)
    cost ~40 µs a pack, a fifth of all the gateway spent at 10 readings a pack.

    Reads are buffered, and one wake-up of the event loop decodes every whole packet the
    buffer holds: paho reads a packet in three or more `recv` calls of a few bytes, and
    aiomqtt decodes one packet per wake-up, so a small pack cost four system calls and a
    turn of the event loop."""

    _fd = -1
    paused = False
    sink: Callable[[mqtt.MQTTMessage], None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # paho logs each packet it reads and writes at debug level through aiomqtt's logger:
        # 4 % of the gateway at 10 readings a pack, for lines nobody reads. What goes wrong
        # with the connection reaches us as aiomqtt's errors, and we log those.
        self._client.disable_logger()
        self._inbox = b""
        self._taken = 0
        self._raw_recv = self._client._sock_recv
        self._client._sock_recv = self._buffered_recv  # type: ignore[method-assign]

    def _buffered_recv(self, bufsize: int) -> bytes:
        if self._taken >= len(self._inbox):
            data = self._raw_recv(READ_CHUNK)  # raises BlockingIOError when there is nothing
            if len(data) <= bufsize:
                return data
            self._inbox, self._taken = data, 0
        chunk = self._inbox[self._taken:self._taken + bufsize]
        self._taken += len(chunk)
        return chunk

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self.sink is None:
            super()._on_message(client, userdata, message)
        else:
            self.sink(message)

    def _on_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        super()._on_socket_open(client, userdata, sock)
        self._fd = sock.fileno()
        self.paused = False
        self._inbox, self._taken = b"", 0
        # Ours in place of aiomqtt's reader, which decodes one packet a wake-up. paho calls
        # this from the thread that connects, and aiomqtt adds its reader through
        # call_soon_threadsafe: so does this, after it.
        self._loop.call_soon_threadsafe(self._loop.add_reader, self._fd, self._read_ready)

    def pause_reading(self) -> None:
        if not self.paused and self._fd >= 0:
            self.paused = self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if self.paused:
            self.paused = False
            self._loop.add_reader(self._fd, self._read_ready)
            if self._taken < len(self._inbox):  # the socket may have nothing new to wake us
                self._loop.call_soon(self._read_ready)

    def _read_ready(self) -> None:
        try:
            # Each call consumes buffered bytes or empties the buffer, so this ends.
            while self._client.loop_read() == mqtt.MQTT_ERR_SUCCESS and not self.paused \
                    and self._taken < len(self._inbox):
                pass
        except Exception as exc:  # a broken connection: aiomqtt's disconnect path takes over
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)


def _libc_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None


READ_CHUNK = 256 * 1024
_MALLOC_TRIM = _libc_malloc_trim()
TRIM_EVERY_S = 10.0


def refuses_writes(exc: BaseException) -> bool:
    """The database, not the data: down, unreachable, read-only, out of disk, shutting down."""
    return isinstance(exc, psycopg.OperationalError | psycopg.errors.ReadOnlySqlTransaction |
                      psycopg.errors.InsufficientPrivilege | psycopg.errors.InFailedSqlTransaction)


_T = TypeVar("_T")
LEAVE_IDLE_S = 3.0  # leaving: this long with nothing unacked and nothing arriving = drained
SPOOL_RETRY_S = 2.0  # idle with packs in the spool: try the database again this often


class Gateway:
    def __init__(self, settings: Settings, *, leave: bool = False) -> None:
        """`leave`: retire this gateway's session from the shared group (scaling down). It
        unsubscribes, so the broker routes it nothing new, stores what the broker had already
        queued for it, then ends the session. A plain stop keeps the session and its queue
        for a restart: a gateway stopped for good that way strands its share of the queue."""
        self.settings = settings
        self.leave = leave
        self.drained = False
        self._unacked = 0  # packs received on this connection and not yet acked
        self._unacked_bytes = 0  # and their payloads' size
        self._buffered_bytes = 0
        self._trimmed_at = time.monotonic()
        self._limited_counted_at = 0.0
        self.mqtt_url = settings.require_mqtt_url()
        self._broker = urlsplit(self.mqtt_url)
        self.rollups: LoopService | None = None  # the in-process rollup worker, shown in health
        self.writer = BatchWriter(settings.require_database_url(), max_skew_s=settings.max_clock_skew_s,
                                  max_age_s=settings.late_data_horizon_s, rollup_settle_s=settings.rollup_settle_s,
                                  rollup_shards=settings.rollup_queue_shards,
                                  rollup_gap_s=settings.reporting_interval_s * settings.gap_factor)
        self.spool = Spool(settings.spool_dir, settings.spool_max_bytes)
        self.buckets = BridgeBuckets(settings.bridge_max_bytes_per_s, settings.bridge_burst_bytes)
        self.stats = GatewayStats()
        self._buffer: list[RawPack] = []
        self._arrived = asyncio.Event()  # the buffer holds at least one pack
        self._full = asyncio.Event()  # the buffer holds a full batch
        self._stopping = asyncio.Event()
        self._mqtt: _MqttClient | None = None  # the connection being read
        self.subscribed = False
        self.sparkplug = SparkplugHost() if settings.sparkplug_host else None

    def health(self) -> dict[str, object] | None:
        if not self.subscribed:
            return None
        return {"status": "ok", "packs": self.stats.packs, "stored": self.stats.stored,
                "duplicates": self.stats.duplicates,
                "spool_bytes": self.spool.size(), "unacked": self._unacked, "buffered": len(self._buffer),
                "sparkplug_rebirths_asked": None if self.sparkplug is None else self.sparkplug.rebirths_asked,
                "rollups": None if self.rollups is None else (self.rollups.health() or {"status": "stalled"})}

    def stop(self) -> None:
        self._stopping.set()
        self._arrived.set()
        self._full.set()

    # -- processing (runs in worker threads) ------------------------------------------------
    def _prepare(self, packs: list[RawPack]) -> Prepared:
        return self.writer.prepare(packs)

    def _commit(self, prepared: Prepared) -> bool:
        """Make the batch durable. True: ack it. False: not durable yet (retry later).

        A database that is down or refuses writes (read-only, out of disk) gets the batch
        spooled, then acks held once the spool is full. Any other failure is the batch's
        own: its packs are committed one by one, and a pack that fails alone is rejected
        (`processing_error`) and acked, so that no pack is redelivered forever."""
        started = time.monotonic()
        try:
            self._replay_spool()
            result = self.writer.commit(prepared)
        except Exception as exc:
            if refuses_writes(exc):
                return self._hold(prepared.packs, exc)
            log.error("batch failed; committing its packs one by one", packs=len(prepared.packs),
                      error=type(exc).__name__)
            return self._commit_one_by_one(prepared.packs, started)
        metrics.DB_UP.set(1)
        self._account(result, prepared.packs, started)
        return True

    def _hold(self, packs: list[RawPack], exc: BaseException) -> bool:
        """The database will not take writes now: spool the packs (ack), or hold the acks."""
        metrics.DB_UP.set(0)
        self.writer.close()
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if self.spool.full():
            log.warning("database refuses writes and spool full: holding acks", error=reason)
            return False
        self.spool.append(packs)
        metrics.SPOOLED_PACKS.inc(len(packs))
        metrics.SPOOL_BYTES.set(self.spool.size())
        self.stats.spooled_packs += len(packs)
        log.warning("database refuses writes: batch spooled", packs=len(packs), error=reason)
        return True

    def _commit_one_by_one(self, packs: list[RawPack], started: float) -> bool:
        for i, pack in enumerate(packs):
            try:
                self._account(self.writer.write([pack]), [pack], started)
            except Exception as exc:
                if refuses_writes(exc):
                    return self._hold(packs[i:], exc)
                self._reject_unprocessable(pack, exc)
        return True

    def _reject_unprocessable(self, pack: RawPack, exc: BaseException) -> None:
        metrics.REJECTED.labels(Reason.PROCESSING_ERROR).inc()
        self.stats.rejected += 1
        log.error("pack could not be processed: rejected", topic=pack.topic[:200], error=type(exc).__name__)
        try:
            self.writer.reject_unprocessable(pack, exc)
        except Exception as again:  # not even its rejection can be stored: count it, never loop on it
            metrics.UNPROCESSABLE_LOST.inc()
            log.error("unprocessable pack could not be kept", error=type(again).__name__)

    def _replay_when_idle(self) -> None:
        try:
            self._replay_spool()
        except Exception as exc:
            if not refuses_writes(exc):
                raise
            metrics.DB_UP.set(0)
            self.writer.close()
            return
        metrics.DB_UP.set(1)

    def _replay_spool(self) -> None:
        for segment in self.spool.segments():
            packs = Spool.read(segment)
            try:
                result = self.writer.write(packs)
            except Exception as exc:
                if refuses_writes(exc):
                    raise
                self._commit_one_by_one(packs, time.monotonic())
            else:
                self._account(result, packs, time.monotonic())
                log.info("spool segment replayed", packs=len(packs), stored=result.stored)
            segment.unlink()
            metrics.SPOOL_BYTES.set(self.spool.size())

    def _account(self, result: BatchResult, packs: list[RawPack], started: float) -> None:
        metrics.PACKS_RECEIVED.inc(result.packs)
        metrics.READINGS_RECEIVED.inc(result.readings)
        metrics.READINGS_STORED.inc(result.stored)
        metrics.READINGS_DUPLICATE.inc(result.duplicates)
        for reason, n in result.rejected.items():
            metrics.REJECTED.labels(reason).inc(n)
        metrics.BATCH_SECONDS.observe(time.monotonic() - started)
        if packs:
            metrics.LAG_SECONDS.set(time.time() - min(p.received_at for p in packs))
        self.stats.batches += 1
        self.stats.packs += result.packs
        self.stats.stored += result.stored
        self.stats.duplicates += result.duplicates
        self.stats.rejected += sum(result.rejected.values())
        self.stats.last_batch_at = time.time()

    # -- MQTT --------------------------------------------------------------------------
    def _client(self, **options: Any) -> _MqttClient:
        """A client of our broker under our client id (MQTT v5); `options` set the session."""
        parts = self._broker
        if self.sparkplug is not None:  # Sparkplug's host STATE: offline if we vanish
            options["will"] = aiomqtt.Will(sparkplug_host.state_topic(self.settings.mqtt_client_id),
                                           sparkplug_host.state_payload(False), qos=1, retain=True)
        client = _MqttClient(parts.hostname or "127.0.0.1", parts.port or 1883, username=parts.username,
                             password=parts.password, identifier=self.settings.mqtt_client_id,
                             protocol=aiomqtt.ProtocolVersion.V5, **options)
        # From the CONNACK on: a resumed session's queue arrives before we subscribe.
        client.sink = self._take
        self._mqtt = client
        return client

    async def run(self) -> None:
        backoff = 0.5
        if self.sparkplug is not None:
            await self._resume_sparkplug_sessions()
        while not self._stopping.is_set():
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 7 * 24 * 3600  # survive restarts: the broker keeps our queue
            props.ReceiveMaximum = self.settings.receive_maximum
            try:
                self._unacked = self._unacked_bytes = 0
                async with self._client(clean_start=False, properties=props,
                                        keepalive=self.settings.mqtt_keepalive_s) as client:
                    client._client.manual_ack_set(True)
                    share = self.settings.mqtt_share_group
                    # Shared: N gateways split the load. Plain (empty group): one gateway, and
                    # the subscription survives a Mosquitto 2.0 restart while we are away,
                    # which a shared one does not (tests/faults: broker restart).
                    prefix = f"$share/{share}/" if share else ""
                    sparkplug = sparkplug_host.FILTERS if self.sparkplug is not None else ()
                    if self.leave:
                        await client.unsubscribe([prefix + SENML_FILTER, prefix + STATUS_FILTER, *sparkplug])
                        log.info("gateway leaving: unsubscribed, draining its queue", group=share)
                    else:
                        await client.subscribe(prefix + SENML_FILTER, qos=1)
                        await client.subscribe(prefix + STATUS_FILTER, qos=1)
                        for topic_filter in sparkplug:  # plain: one reader sees an edge node in order
                            await client.subscribe(topic_filter, options=SubscribeOptions(qos=1, noLocal=True))
                        if sparkplug:
                            await self._say_state(client, online=True)
                        log.info("gateway subscribed", broker=f"{self._broker.hostname}:{self._broker.port}",
                                 group=share)
                    self.subscribed = True
                    if self._holding_enough():
                        client.pause_reading()
                    backoff = 0.5
                    try:
                        await self._consume(client)
                    finally:
                        self.subscribed = False
                    if sparkplug and not self.leave:  # stopping: edge nodes waiting on their host see it go
                        await self._say_state(client, online=False)
            except aiomqtt.MqttError as exc:
                if self._stopping.is_set():
                    break
                log.warning("broker connection lost; reconnecting", error=str(exc), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
        if self.drained:
            await self._end_session()
        await asyncio.to_thread(self.writer.close)
        log.info("gateway stopped", packs=self.stats.packs, stored=self.stats.stored,
                 duplicates=self.stats.duplicates, spooled=self.stats.spooled_packs)

    async def _say_state(self, client: _MqttClient, *, online: bool) -> None:
        """Sparkplug's host STATE, retained (the connection's will says offline too)."""
        await client.publish(sparkplug_host.state_topic(self.settings.mqtt_client_id),
                             sparkplug_host.state_payload(online), qos=1, retain=True)

    async def _resume_sparkplug_sessions(self) -> None:
        """Each edge node's session as the last committed batch left it (after the spool's
        packs, which carry theirs). A database that cannot say starts them empty: the first
        message of each is then refused, kept, and answered with a rebirth request."""
        assert self.sparkplug is not None
        try:
            await self._guarded(self._replay_when_idle)
            states = await self._guarded(self._load_sparkplug_sessions)
        except Exception as exc:
            log.warning("Sparkplug sessions could not be loaded; edge nodes will be asked to rebirth",
                        error=type(exc).__name__)
            return
        self.sparkplug = SparkplugHost(states)
        log.info("Sparkplug sessions resumed", edge_nodes=len(states))

    def _load_sparkplug_sessions(self) -> dict[SessionKey, SessionState]:
        with psycopg.connect(self.settings.require_database_url(), connect_timeout=5) as conn:
            return sparkplug_host.load(conn)

    async def _end_session(self) -> None:
        """A clean-start connection with no expiry replaces the session, and its end deletes it."""
        async with self._client(clean_start=True):
            pass
        log.info("gateway left the group: session ended", packs=self.stats.packs, stored=self.stats.stored)

    def _wake(self, _: object = None) -> None:
        self._arrived.set()
        self._full.set()

    async def _consume(self, client: _MqttClient) -> None:
        reader = asyncio.create_task(self._read(client))
        # A dead reader (broker gone) must wake the flush loop, which then re-raises.
        reader.add_done_callback(self._wake)
        try:
            await self._flush_loop(client, reader)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await reader
            # Whatever is still buffered was never acked: the broker redelivers it, and
            # Sparkplug sessions go back to the last acked message to read it as new.
            self._buffer.clear()
            self._buffered_bytes = 0
            if self.sparkplug is not None:
                self.sparkplug.rewind()

    async def _read(self, client: _MqttClient) -> None:
        """Ends when the connection does (messages arrive through `_take`)."""
        await asyncio.shield(client._disconnected)
        raise aiomqtt.MqttError("the broker connection ended")

    def _take(self, message: mqtt.MQTTMessage) -> None:
        # The topic's bytes as sent: Mosquitto checks that topics are UTF-8, but a pack with
        # a broken one must still be kept and rejected, not crash the reader.
        topic = message._topic.decode("utf-8", "replace")
        payload = bytes(message.payload)
        if self.sparkplug is not None and topic.startswith(sparkplug_host.TOPIC_PREFIX):
            pack = self._from_sparkplug(topic, payload, message)
        else:
            pack = RawPack(topic, payload, time.time(), message.mid, message.qos)
        bridge = bridge_from_topic(pack.topic)
        pack.limited = bridge is not None and not self.buckets.allow(bridge, len(payload))
        self._buffer.append(pack)
        self._unacked += 1
        self._unacked_bytes += len(payload)
        self._buffered_bytes += len(payload)
        # Not before the subscriptions are answered: their SUBACKs queue behind a resumed
        # session's packs, and pausing then would leave `subscribe` waiting for ever.
        if self.subscribed and self._mqtt is not None and self._holding_enough():
            self._mqtt.pause_reading()
        self._arrived.set()
        if len(self._buffer) >= self.settings.batch_max_packs or self._buffered_bytes >= self.settings.batch_max_bytes:
            self._full.set()

    def _from_sparkplug(self, topic: str, payload: bytes, message: mqtt.MQTTMessage) -> RawPack:
        assert self.sparkplug is not None
        pack, rebirth = self.sparkplug.take(topic, payload, time.time(), message.mid, message.qos, bool(message.dup))
        if rebirth is not None and self._mqtt is not None:
            # From paho's own read callback: publish only queues the packet.
            self._mqtt._client.publish(*sparkplug_host.rebirth_request(rebirth), qos=0)
            metrics.SPARKPLUG_REBIRTHS.inc()
            log.info("Sparkplug rebirth asked", group=rebirth[0], edge_node=rebirth[1])
        return pack

    def _holding_enough(self) -> bool:
        return self._unacked >= self.settings.receive_maximum or self._unacked_bytes >= self.settings.max_unacked_bytes

    def _next_batch(self) -> list[RawPack]:
        """Up to `batch_max_packs` packs and `batch_max_bytes` (at least one pack) off the buffer."""
        limit, n, size = self.settings.batch_max_bytes, 0, 0
        for pack in self._buffer[:self.settings.batch_max_packs]:
            if n and size + len(pack.payload) > limit:
                break
            n += 1
            size += len(pack.payload)
        batch, self._buffer = self._buffer[:n], self._buffer[n:]
        self._buffered_bytes -= size
        return batch

    async def _flush_loop(self, client: _MqttClient, reader: asyncio.Task[None]) -> None:
        """A batch closes when it is full or `batch_max_seconds` after its first pack. The next
        batch is decoded while the previous one commits; packs are acked after their commit."""
        committing: asyncio.Task[None] | None = None
        try:
            while not self._stopping.is_set():
                # Wait for packs or for the reader to die, whichever first: a wake-up set by a
                # dying reader can be cleared below before it is seen (found by the broker-
                # restart fault test: the gateway sat subscribed to a dead connection).
                if not self._arrived.is_set():
                    arrived = asyncio.ensure_future(self._arrived.wait())
                    waits: set[asyncio.Future[Any]] = {arrived, reader}
                    if committing is not None and not committing.done():
                        waits.add(committing)
                    # Idle with a spool: retry it now and then, not only when the next pack comes.
                    idle = LEAVE_IDLE_S if self.leave else SPOOL_RETRY_S if self.spool.size() else None
                    done, _ = await asyncio.wait(waits, timeout=idle, return_when=asyncio.FIRST_COMPLETED)
                    arrived.cancel()
                    if not done and not self._buffer and (committing is None or committing.done()):
                        if not self.leave:
                            await self._guarded(self._replay_when_idle)
                            continue
                        self.drained = True  # leaving, and all the broker queued for us is stored
                        self._stopping.set()
                        break
                if reader.done():
                    reader.result()  # re-raise the broker error
                    raise aiomqtt.MqttError("the message stream ended")
                if not self._full.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), self.settings.batch_max_seconds)
                batch = self._next_batch()
                metrics.UNACKED.set(self._unacked)
                if time.monotonic() - self._limited_counted_at > 1.0:  # a pass over every bridge
                    self._limited_counted_at = time.monotonic()
                    metrics.RATE_LIMITED_BRIDGES.set(self.buckets.limited())
                # What is left may already be a full batch.
                if len(self._buffer) < self.settings.batch_max_packs and \
                        self._buffered_bytes < self.settings.batch_max_bytes:
                    self._full.clear()
                if not self._buffer:
                    self._arrived.clear()
                if not batch:
                    continue
                prepared = await asyncio.to_thread(self._prepare, batch)
                if committing is not None:
                    await committing
                committing = asyncio.create_task(self._commit_and_ack(client, prepared))
        finally:
            if committing is not None:
                with contextlib.suppress(Exception):
                    await committing

    async def _guarded(self, work: Callable[..., _T], *args: Any) -> _T:
        """Run database work in a thread; if the database has not answered within
        `db_write_timeout_s` (a half-open peer: it acknowledges bytes and never answers),
        break the writer's connection, so that the work fails, spools and moves on."""
        task = asyncio.ensure_future(asyncio.to_thread(work, *args))
        done, _ = await asyncio.wait({task}, timeout=self.settings.db_write_timeout_s)
        if not done:
            log.warning("database not answering: breaking the connection", seconds=self.settings.db_write_timeout_s)
            metrics.DB_TIMEOUTS.inc()
            self.writer.abort()
        return await task

    async def _commit_and_ack(self, client: _MqttClient, prepared: Prepared) -> None:
        while not await self._guarded(self._commit, prepared):
            if self._stopping.is_set():
                return
            await asyncio.sleep(1.0)
        for pack in prepared.packs:
            if pack.qos > 0:
                client._client.ack(pack.mid, pack.qos)
        if self.sparkplug is not None:
            self.sparkplug.made_durable(prepared.packs)
        self._unacked -= len(prepared.packs)
        self._unacked_bytes -= sum(len(p.payload) for p in prepared.packs)
        metrics.UNACKED.set(self._unacked)
        if not self._holding_enough():
            client.resume_reading()
        # Packs are ~32 kB bytes objects, below glibc's mmap threshold: a burst leaves the
        # heap fragmented and RSS stepped up for good (the soak saw +39 MiB in 10 min).
        # Handing free pages back now and then keeps RSS flat.
        if _MALLOC_TRIM is not None and time.monotonic() - self._trimmed_at > TRIM_EVERY_S:
            self._trimmed_at = time.monotonic()
            await asyncio.to_thread(_MALLOC_TRIM, 0)


async def serve(settings: Settings, *, with_rollups: bool = True, leave: bool = False) -> None:
    """Run a gateway until SIGINT or SIGTERM, with its health and metrics, and (by default) the rollup worker."""
    gateway = Gateway(settings, leave=leave)
    worker: LoopService | None = None
    if with_rollups:
        # Imported here: Numba and LLVM cost ~100 MB of RSS a --no-rollups gateway need not pay.
        from analytics.worker import rollup_service

        worker = rollup_service(settings)
        gateway.rollups = worker
    http = serve_http(settings.gateway_metrics_port, gateway.health, name="gateway") \
        if settings.gateway_metrics_port else None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, gateway.stop)
    if worker is not None:
        worker.start()
    try:
        await gateway.run()
    finally:
        if worker is not None:
            worker.stop()
        if http is not None:
            http.shutdown()

