"""paho's MQTT client, reading and acknowledging in bursts instead of one packet at a time.

paho 2.x wakes from ``select()`` once per packet and reads it with a
``recv(1)`` for its first byte, one per byte of its remaining length, and one
for the rest: four system calls and a wake-up per message. Each ``ack()``
queues its PUBACK apart, wakes paho's thread through a socket pair and is
written with a ``send()`` of its own. At thousands of messages a second those
system calls were most of the gateway's CPU (py-spy, docs/architecture.md).

:class:`BurstClient` changes only that plumbing:

- it reads up to 64 KiB per ``recv()`` and parses every whole packet it holds
  before waiting again (a burst of messages costs one wake-up and one read);
- :attr:`BurstClient.on_burst_end` is called once a burst is parsed, so its
  messages can be handed on together;
- :meth:`BurstClient.ack_many` writes the PUBACKs of many messages as one
  write: MQTT packets may follow each other in one TCP send.

Packet parsing, sessions, reconnects and callbacks stay paho's own.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

_READ_SIZE = 65536
#: ``recv()`` calls per wake-up at most (1 MiB), so a flood cannot starve paho's writes.
#: Past it the rest waits in the kernel, where ``select()`` sees it; never in our buffer.
_RECVS_PER_WAKEUP = 16
_PUBACK = struct.Struct("!BBH")
_PUBACK_COMMAND = 0x40


class BurstClient(mqtt.Client):
    """:class:`paho.mqtt.client.Client` with buffered reads and batched PUBACKs."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._read_sock: object = None
        self._read_buf = b""
        self._read_pos = 0
        self._recvs_left = _RECVS_PER_WAKEUP
        #: Called (on paho's thread) after each burst of packets has been parsed.
        self.on_burst_end: Callable[[], None] | None = None

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._sock is not self._read_sock:
            # A new connection: nothing read from the old one is valid.
            self._read_sock, self._read_buf, self._read_pos = self._sock, b"", 0
        if self._read_pos >= len(self._read_buf):
            if self._recvs_left <= 0:
                raise BlockingIOError  # enough for this wake-up: the rest is in the kernel
            self._recvs_left -= 1
            data = super()._sock_recv(_READ_SIZE)  # BlockingIOError when nothing came
            if not data:
                return data  # the broker closed the connection
            self._read_buf, self._read_pos = data, 0
        chunk = self._read_buf[self._read_pos : self._read_pos + bufsize]
        self._read_pos += len(chunk)
        return chunk

    @property
    def buffered(self) -> int:
        """Bytes read from the socket and not yet parsed (0 whenever ``loop_read`` returns)."""
        return len(self._read_buf) - self._read_pos if self._read_sock is self._sock else 0

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Parse every packet that has arrived (paho's own reads one per call).

        It returns only once its buffer is empty: ``select()`` sees the
        kernel's socket buffer, never ours, so a packet left here would wait
        for the next byte from the broker (which may not come: a broker at
        the gateway's Receive Maximum sends nothing until it gets PUBACKs).
        """
        self._recvs_left = _RECVS_PER_WAKEUP
        try:
            return self._read_burst()
        finally:
            if self.on_burst_end is not None:
                self.on_burst_end()

    def _read_burst(self) -> MQTTErrorCode:
        while True:
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_many(self, mids: Sequence[int]) -> None:
        """PUBACK the QoS 1 messages ``mids``, in this order, in one write."""
        if not mids or self._sock is None:
            return
        packet = b"".join([_PUBACK.pack(_PUBACK_COMMAND, 2, mid) for mid in mids])
        self._packet_queue(_PUBACK_COMMAND, packet, 0, 1)
