"""Whether a port talks MQTT: the alert tests' check of a broker before they use it."""

from __future__ import annotations

import socket
import uuid


def speaks_mqtt(host: str, port: int) -> bool:
    """A broker talks MQTT 3.1.1 on host:port: it accepts a connection and a subscription, and
    a message published there comes back (anything else on the port, or nothing, is no broker).
    Spoken here byte by byte, so that a probe of a silent port leaves nothing behind."""
    client = f"hsi-probe-{uuid.uuid4().hex[:8]}".encode()
    topic = _mqtt_text(f"hsi-test-probe/{uuid.uuid4().hex}".encode())
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            # CONNECT (clean session, keep-alive 60 s) → CONNACK accepted
            sock.sendall(
                _mqtt_packet(0x10, _mqtt_text(b"MQTT") + b"\x04\x02\x00\x3c" + _mqtt_text(client))
            )
            if _mqtt_read(sock) != (0x20, b"\x00\x00"):
                return False
            # SUBSCRIBE packet 1 at QoS 0 → SUBACK granting QoS 0
            sock.sendall(_mqtt_packet(0x82, b"\x00\x01" + topic + b"\x00"))
            if _mqtt_read(sock) != (0x90, b"\x00\x01\x00"):
                return False
            sock.sendall(_mqtt_packet(0x30, topic + b"probe"))  # PUBLISH at QoS 0
            received = _mqtt_read(sock)
            sock.sendall(b"\xe0\x00")  # DISCONNECT
            return received == (0x30, topic + b"probe")
    except (OSError, ValueError):  # refused, silent, closed, or not MQTT
        return False


def _mqtt_text(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def _mqtt_packet(kind: int, body: bytes) -> bytes:
    length, encoded = len(body), bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            return bytes([kind, *encoded]) + body


def _mqtt_read(sock: socket.socket) -> tuple[int, bytes]:
    """One packet: its first byte and its body."""
    kind = _receive(sock, 1)[0]
    length = shift = 0
    while True:
        byte = _receive(sock, 1)[0]
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return kind, _receive(sock, length)
        shift += 7
        if shift > 21:
            raise ValueError("not an MQTT packet length")


def _receive(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ValueError("connection closed")
        data += chunk
    return data
