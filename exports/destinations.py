"""Where a file goes: an HTTPS receiver (POST, signed like webhooks) or an SFTP server (key
authentication, host key pinned). A failure raises `DeliveryFailed` with the reason a person
can act on; the runner records it on the run and retries.

HTTPS is at least once: a retry carries the same `Wattline-Delivery` id, for the receiver
to drop a duplicate. SFTP is exactly once in effect: the file is written under a temporary
name and renamed over the final one, so a retried run replaces its own file.
"""

from __future__ import annotations

import base64
import hashlib
import io
import ipaddress
import posixpath
import socket
import ssl
from typing import Any

import httpx
import paramiko

from exports.files import ExportFile
from wattline.outbound import UnsafeDestination, check_address, pin
from wattline.settings import Settings
from wattline.signing import sign

CONNECT_TIMEOUT_S = 15.0


class DeliveryFailed(Exception):
    """The destination did not take the file; `str()` says why."""


class HostKeyChanged(DeliveryFailed):
    """The SFTP server presented another key than the one pinned: refused, never retried blind."""


def deliver_https(job: dict[str, Any], run: dict[str, Any], file: ExportFile, settings: Settings) -> None:
    """POST the file, signed; a non-2xx answer or no answer fails."""
    try:
        target = pin(job["url"], allow_private=settings.allow_private_destinations)
    except UnsafeDestination as exc:
        raise DeliveryFailed(f"unsafe destination: {exc.detail}") from exc
    headers = {**target.headers, "Content-Type": file.media_type, "Wattline-Signature": sign(job["secret"], file.body),
               "Wattline-Delivery": f"export-run-{run['id']}", "Wattline-Export": str(job["id"]),
               "Wattline-Period": f"{run['period_start'].isoformat()}/{run['period_end'].isoformat()}",
               "Content-Disposition": f'attachment; filename="{file.name}"'}
    verify: Any = True
    if settings.outbound_ca_file:  # the system's CAs and this one
        verify = ssl.create_default_context()
        verify.load_verify_locations(cafile=str(settings.outbound_ca_file))
    try:
        with httpx.Client(timeout=httpx.Timeout(60.0, connect=CONNECT_TIMEOUT_S), verify=verify) as client:
            response = client.post(target.url, content=file.body, headers=headers, extensions=target.extensions)
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}"[:300]) from exc
    if not response.is_success:
        raise DeliveryFailed(f"the receiver answered {response.status_code}: {response.text[:200]}")


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint of a host key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def deliver_sftp(job: dict[str, Any], file: ExportFile, settings: Settings) -> str | None:
    """Upload the file; returns the server's host key fingerprint when it was pinned just now."""
    host, port = job["sftp_host"], int(job["sftp_port"] or 22)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise DeliveryFailed(f"{host} does not resolve ({type(exc).__name__})") from exc
    address = str(infos[0][4][0])
    try:
        check_address(ipaddress.ip_address(address), allow_private=settings.allow_private_destinations)
    except UnsafeDestination as exc:
        raise DeliveryFailed(f"unsafe destination: {exc.detail}") from exc
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(job["sftp_private_key"]))
    transport: paramiko.Transport | None = None
    pinned_now = None
    try:
        sock = socket.create_connection((address, port), timeout=CONNECT_TIMEOUT_S)
        transport = paramiko.Transport(sock)
        transport.banner_timeout = CONNECT_TIMEOUT_S
        transport.start_client(timeout=CONNECT_TIMEOUT_S)
        seen = fingerprint(transport.get_remote_server_key())
        if job["sftp_host_key"] and job["sftp_host_key"] != seen:
            raise HostKeyChanged(f"the server's host key changed (expected {job['sftp_host_key']}, got {seen}); "
                                 "if that is expected, give the new one to the job")
        if not job["sftp_host_key"]:
            pinned_now = seen
        transport.auth_publickey(job["sftp_username"], key)
        sftp = paramiko.SFTPClient.from_transport(transport)
        if sftp is None:
            raise DeliveryFailed("the server offers no SFTP subsystem")
        folder = job["sftp_path"] or "."
        final = posixpath.join(folder, file.name)
        partial = posixpath.join(folder, f".{file.name}.part")
        with sftp.open(partial, "wb") as remote:
            remote.write(file.body)
        # A server may take writes it cannot keep (a full disk under some SFTP servers): the
        # file is renamed into place only once the server says it holds every byte.
        size = sftp.stat(partial).st_size
        if size != len(file.body):
            sftp.remove(partial)
            raise DeliveryFailed(f"the server kept {size} of {len(file.body)} bytes (disk full?)")
        sftp.posix_rename(partial, final)
        sftp.close()
    except DeliveryFailed:
        raise
    except paramiko.AuthenticationException as exc:
        raise DeliveryFailed("the server refused our key: add the job's public key to authorized_keys") from exc
    except (OSError, paramiko.SSHException, EOFError) as exc:
        raise DeliveryFailed(_sftp_reason(exc)) from exc
    finally:
        if transport is not None:
            transport.close()
    return pinned_now


def _sftp_reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ConnectionRefusedError | TimeoutError | socket.timeout):
        return f"the SFTP server cannot be reached ({type(exc).__name__})"
    if "No space" in text or "quota" in text.lower() or text == "Failure":
        # SFTP v3 (OpenSSH) reports a full disk or a quota as a bare SSH_FX_FAILURE.
        return f"the server refused the write (disk full or over quota?): {text}"[:300]
    return f"{type(exc).__name__}: {text}"[:300]
