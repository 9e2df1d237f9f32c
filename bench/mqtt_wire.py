"""MQTT 3.1.1 on the wire, for the load generators that stand in for bridges.

The bridges of a deployment are on their sites; here they share the server's cores, so
what they cost is taken from the system under test. paho spends about 97 µs of CPU on a
QoS 1 publish (its packet queue, locks and a message-info object per pack, in two
threads): a third of a core at the whole fleet's 3,335 packs/s (`bench rolluploop`).
Built here, a pack costs its bytes and a share of one `sendall` per batch. Both
generators speak QoS 1 as bridges do: the broker acknowledges every pack.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

KEEPALIVE_S = 60
CONNACK, PUBACK = 2, 4
PINGREQ, DISCONNECT = b"\xc0\x00", b"\xe0\x00"


def field(data: bytes) -> bytes:
    """A length-prefixed string or binary field."""
    return struct.pack("!H", len(data)) + data


def packet(first: int, body: bytes) -> bytes:
    """A control packet: its first byte, the body's length as a variable-length integer, the body."""
    size, length = len(body), bytearray()
    while True:
        byte, size = size % 128, size // 128
        length.append(byte | (0x80 if size else 0))
        if not size:
            return bytes([first]) + bytes(length) + body


def publish_packet(topic: bytes, pid: int, payload: bytes, *, retain: bool = False, dup: bool = False) -> bytes:
    """A QoS 1 PUBLISH."""
    first = 0x32 | (0x08 if dup else 0) | (0x01 if retain else 0)
    return packet(first, field(topic) + struct.pack("!H", pid) + payload)


def split_packets(buffer: bytearray) -> list[tuple[int, bytes]]:
    """The whole packets at the start of `buffer` as (type, body), removed from it; a
    partly received packet stays for the next read."""
    out: list[tuple[int, bytes]] = []
    at = 0
    while len(buffer) - at >= 2:
        size, shift, k = 0, 0, at + 1
        while k < len(buffer):
            size |= (buffer[k] & 0x7F) << shift
            shift += 7
            k += 1
            if not buffer[k - 1] & 0x80:
                break
        else:
            break  # the length itself is not all here yet
        if len(buffer) - k < size:
            break
        out.append((buffer[at] >> 4, bytes(buffer[k:k + size])))
        at = k + size
    del buffer[:at]
    return out


class QoS1Publisher:
    """One clean-session connection that publishes batches of QoS 1 packs as single writes,
    and counts the broker's acknowledgements in a reader thread."""

    def __init__(self, url: str, client_id: str) -> None:
        parts = urlsplit(url)
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        flags = 0x02 | (0x80 if user else 0) | (0x40 if password else 0)  # clean session
        body = field(b"MQTT") + bytes([4, flags]) + struct.pack("!H", KEEPALIVE_S) + field(client_id.encode())
        body += (field(user.encode()) if user else b"") + (field(password.encode()) if password else b"")
        self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 1883), timeout=30)
        self.sock.sendall(packet(0x10, body))
        connack = self._read_exactly(4)
        if connack[0] >> 4 != CONNACK or connack[3] != 0:
            self.sock.close()
            raise ConnectionRefusedError(f"the broker refused {client_id!r}: CONNACK {connack.hex()}")
        self.sock.settimeout(None)
        self.sent = self.acked = 0
        self._pid = 0
        self._last_write = time.monotonic()
        self._reader = threading.Thread(target=self._read_acks, name="puback-reader", daemon=True)
        self._reader.start()

    def _read_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            data += chunk
        return data

    def publish_many(self, messages: Iterable[tuple[bytes, bytes]]) -> int:
        """Send (topic, payload) packs in one write; returns how many."""
        packets = []
        for topic, payload in messages:
            self._pid = self._pid % 65535 + 1
            packets.append(publish_packet(topic, self._pid, payload))
        now = time.monotonic()
        if not packets and now - self._last_write < KEEPALIVE_S / 2:
            return 0
        self.sock.sendall(b"".join(packets) if packets else PINGREQ)
        self._last_write = now
        self.sent += len(packets)
        return len(packets)

    def _read_acks(self) -> None:
        pending = bytearray()
        while chunk := self._recv():
            pending += chunk
            self.acked += sum(1 for kind, _ in split_packets(pending) if kind == PUBACK)

    def _recv(self) -> bytes:
        try:
            return self.sock.recv(1 << 16)
        except OSError:
            return b""

    def close(self, timeout_s: float = 60.0) -> None:
        """Wait (up to `timeout_s`) until the broker has acknowledged every pack, then say goodbye."""
        deadline = time.monotonic() + timeout_s
        while self.acked < self.sent and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            self.sock.sendall(DISCONNECT)
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader's recv; close alone may not
        except OSError:
            pass  # the broker went first
        finally:
            self.sock.close()
        self._reader.join(5)
