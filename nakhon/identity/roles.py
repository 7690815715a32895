"""What each MQTT identity may do: pure functions from an identity to its ACLs.

Three kinds of client, each with a role of its own (docs/architecture.md, "Identity and
tenancy"):

- a **device** (username = its sensor id) may publish only under
  ``city/<its city>/<its id>/``, and subscribe to nothing;
- a **bridge** (username ``bridge:<name>``: a LoRaWAN network server, a vendor
  cloud) may publish only under the topic filters it was given;
- a **gateway** (username ``gateway:<name>``) may subscribe only to its
  filters (or ``$share/<its group>/<filter>``, when it has a shared
  subscription group) and receive only its filters' messages; it
  must connect with its own client id, which is random, so nobody can guess it
  and take over its persistent session.

Everything not granted is refused (the broker's default ACL access below):
nobody publishes, subscribes or receives without a role that says so.
Usernames of bridges and gateways contain a ``:``, which sensor ids cannot,
so no device can ever be mistaken for one of them.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from nakhon.domain.identifiers import is_city_id, is_sensor_id
from nakhon.mqtt_connection import subscription

AclType = Literal[
    "publishClientSend", "publishClientReceive", "subscribePattern", "unsubscribePattern"
]
Kind = Literal["device", "bridge", "gateway", "admin"]

#: The administrator of the dynamic security plugin (``nakhon devices ...`` uses it).
ADMIN_USERNAME = "admin:nakhon"
#: The plugin's control topic: commands go here, answers come back on ``.../response``.
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"

#: The broker's answer when no role says anything: refuse everything but unsubscribing.
DEFAULT_ACL_ACCESS: dict[str, bool] = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": True,
}

_NAME = re.compile(r"^[a-z0-9_-]{1,64}$")


class IdentityError(ValueError):
    """A name, city or topic filter that cannot make a safe identity."""


@dataclass(frozen=True, slots=True)
class Acl:
    acltype: AclType
    topic: str
    allow: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"acltype": self.acltype, "topic": self.topic, "allow": self.allow}


@dataclass(frozen=True, slots=True)
class Identity:
    """One client of the broker and the role that says what it may do."""

    kind: Kind
    username: str
    rolename: str
    acls: tuple[Acl, ...]
    #: When set, the broker accepts this username only with this client id.
    clientid: str | None = None
    #: For a device: the topic prefix it publishes under (with a trailing ``/``).
    topic_prefix: str | None = None

    @property
    def publish_topics(self) -> list[str]:
        return [a.topic for a in self.acls if a.acltype == "publishClientSend" and a.allow]

    @property
    def subscribe_topics(self) -> list[str]:
        return [a.topic for a in self.acls if a.acltype == "subscribePattern" and a.allow]


def device_username(sensor_id: str) -> str:
    return sensor_id


def bridge_username(name: str) -> str:
    return f"bridge:{name}"


def gateway_username(name: str) -> str:
    return f"gateway:{name}"


def kind_of(username: str) -> Kind:
    if username == ADMIN_USERNAME:
        return "admin"
    if username.startswith("bridge:"):
        return "bridge"
    if username.startswith("gateway:"):
        return "gateway"
    return "device"


def device_identity(sensor_id: str, city: str, topic_root: str = "city") -> Identity:
    """A sensor that publishes only its own readings, only in its own city."""
    if not is_sensor_id(sensor_id):
        raise IdentityError(f"invalid sensor id {sensor_id!r}: 1-64 of [a-z0-9_-]")
    if not is_city_id(city):
        raise IdentityError(f"invalid city id {city!r}: 1-64 of [a-z0-9_]")
    _check_filter(f"{topic_root}/#")
    prefix = f"{topic_root}/{city}/{sensor_id}/"
    return Identity(
        kind="device",
        username=device_username(sensor_id),
        rolename=f"device:{sensor_id}",
        acls=(Acl("publishClientSend", prefix + "#"),),
        topic_prefix=prefix,
    )


def bridge_identity(name: str, filters: Sequence[str]) -> Identity:
    """An integration that publishes for many devices, only under ``filters``."""
    _check_name(name, "bridge")
    if not filters:
        raise IdentityError("a bridge needs at least one --topic filter")
    return Identity(
        kind="bridge",
        username=bridge_username(name),
        rolename=f"bridge:{name}",
        acls=tuple(Acl("publishClientSend", _check_filter(f)) for f in filters),
    )


def gateway_identity(
    name: str, share_group: str | None, filters: Sequence[str], clientid: str | None = None
) -> Identity:
    """A gateway: reads ``filters`` only, through ``share_group`` when one is given.

    Without a group (the default) it subscribes to the filters themselves, the
    subscription Mosquitto 2.0 keeps across its own restart; with one, only
    through ``$share/<group>/``, which Mosquitto 2.0 forgets when it restarts
    (docs/architecture.md, "Delivery guarantee").
    """
    _check_name(name, "gateway")
    if share_group:
        _check_name(share_group, "share group")
    if not filters:
        raise IdentityError("a gateway needs at least one topic filter")
    checked = [_check_filter(f) for f in filters]
    acls = [Acl("subscribePattern", subscription(share_group, f)) for f in checked]
    acls += [Acl("publishClientReceive", f) for f in checked]
    return Identity(
        kind="gateway",
        username=gateway_username(name),
        rolename=f"gateway:{name}",
        acls=tuple(acls),
        clientid=clientid or new_gateway_client_id(name),
    )


def admin_identity() -> Identity:
    """The plugin's administrator: its control topic, nothing else."""
    control = "$CONTROL/dynamic-security/#"
    return Identity(
        kind="admin",
        username=ADMIN_USERNAME,
        rolename="admin:nakhon",
        acls=(
            Acl("publishClientSend", control),
            Acl("publishClientReceive", control),
            Acl("subscribePattern", control),
        ),
    )


def new_password() -> str:
    """A password for a new client: 192 random bits, URL-safe text."""
    return secrets.token_urlsafe(24)


def new_gateway_client_id(name: str) -> str:
    """A client id nobody can guess, so nobody can take over the gateway's session."""
    return f"nakhon-gateway-{name}-{secrets.token_hex(12)}"


def _check_name(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise IdentityError(f"invalid {what} name {name!r}: 1-64 of [a-z0-9_-]")
    return name


def _check_filter(topic_filter: str) -> str:
    """An MQTT topic filter a bridge or gateway may be granted.

    Refused: ``#`` alone (every topic, the control topics' neighbours included),
    anything starting with ``$`` (broker internals, shared subscriptions), and
    malformed wildcards.
    """
    if not topic_filter or len(topic_filter) > 256:
        raise IdentityError(f"invalid topic filter {topic_filter!r}")
    if topic_filter.startswith("$") or topic_filter in ("#", "+/#"):
        raise IdentityError(f"topic filter {topic_filter!r} is too wide or reserved")
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise IdentityError(f"invalid topic filter {topic_filter!r}: '#' must be last")
        if "+" in level and level != "+":
            raise IdentityError(f"invalid topic filter {topic_filter!r}: '+' must fill a level")
        if "\x00" in level:
            raise IdentityError(f"invalid topic filter {topic_filter!r}")
    return topic_filter
