"""BurstClient parses everything it read before it waits again (no stranded packets)."""

from __future__ import annotations

import select
import socket
import struct
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from nakhon.ingest.paho_client import BurstClient


def _publish_packet(mid: int) -> bytes:
    """An MQTT 5 PUBLISH, QoS 1, no properties."""
    topic = f"city/rayong/aq-{mid % 50}/json".encode()
    payload = b'{"pm25": 12.5}'
    body = struct.pack("!H", len(topic)) + topic + struct.pack("!H", mid) + b"\x00" + payload
    assert len(body) < 128  # one byte of remaining length
    return bytes([0x32, len(body)]) + body


def test_every_packet_is_parsed_and_none_waits_in_the_buffer() -> None:
    client = BurstClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    got: list[int] = []
    bursts: list[int] = []
    client.on_message = lambda c, u, msg: got.append(msg.mid)
    client.on_burst_end = lambda: bursts.append(len(got))
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours  # as paho's own loop would hold it
    count = 40_000  # ~2 MB: more than one wake-up's read budget
    packets = b"".join(_publish_packet(1 + i % 65_000) for i in range(count))
    writer = threading.Thread(target=broker.sendall, args=(packets,))
    writer.start()
    try:
        while len(got) < count:
            readable, _, _ = select.select([ours], [], [], 2.0)
            # Nothing may wait unseen in the client's buffer: select() sees only the kernel's.
            assert readable, f"stalled at {len(got)} of {count} messages"
            client.loop_read()
            assert client.buffered == 0
    finally:
        writer.join(5)
        ours.close()
        broker.close()
    assert got == [1 + i % 65_000 for i in range(count)]
    assert len(bursts) < count / 100  # many messages per wake-up, not one
