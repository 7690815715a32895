"""PUBACKs in arrival order, each only after Kafka acknowledged its message.

Kafka acknowledges records of different partitions in any order, but an MQTT
client must acknowledge QoS 1 messages in the order it received them (MQTT
3.1.1 §4.6, MQTT 5 §4.6). The queue holds one slot per message taken from the
broker; a slot is marked done when Kafka acked it, and acks leave from the head
only, as soon as the head is done.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class AckSlot:
    """One message taken from the broker: its packet id is valid on ``connection`` only."""

    __slots__ = ("connection", "done", "mid", "qos")

    def __init__(self, mid: int, qos: int, connection: int) -> None:
        self.mid = mid
        self.qos = qos
        self.connection = connection
        self.done = False


class AckQueue:
    """In-order acknowledgement of messages whose delivery completes out of order."""

    def __init__(self, send_ack: Callable[[AckSlot], None]) -> None:
        self._send_ack = send_ack
        self._slots: deque[AckSlot] = deque()

    def __len__(self) -> int:
        return len(self._slots)

    def take(self, mid: int, qos: int, connection: int) -> AckSlot:
        slot = AckSlot(mid, qos, connection)
        self._slots.append(slot)
        return slot

    def delivered(self, slot: AckSlot) -> int:
        """Mark ``slot`` delivered; send every ack now due. Returns how many were sent."""
        slot.done = True
        sent = 0
        slots = self._slots
        while slots and slots[0].done:
            head = slots.popleft()
            self._send_ack(head)
            sent += 1
        return sent

    def clear(self) -> None:
        """Forget every slot (the MQTT connection is gone: the broker will redeliver)."""
        self._slots.clear()
