"""Create, rotate and revoke the broker identities of devices, bridges and gateways.

Each operation is a few dynamic-security commands sent through a
:class:`DynsecAdmin` (and, for a device, one upsert into the sensor registry).
Passwords are generated here unless the operator gives one; they are returned
once, to be shown once, and never logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from nakhon.identity.dynsec import (
    DynsecAdmin,
    DynsecError,
    create_commands,
    delete_commands,
    set_password_command,
)
from nakhon.identity.roles import Identity, kind_of, new_password
from nakhon.storage.sensor_registry import SensorRecord, import_sensors


class ProvisionError(RuntimeError):
    """An operation the operator asked for cannot be done (the message says why)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a new client needs to connect: shown once, then only its hash is kept."""

    username: str
    password: str
    kind: str
    clientid: str | None = None
    topic_prefix: str | None = None
    publish: list[str] = field(default_factory=list)
    subscribe: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, identity: Identity, password: str) -> Credentials:
        return cls(
            username=identity.username,
            password=password,
            kind=identity.kind,
            clientid=identity.clientid,
            topic_prefix=identity.topic_prefix,
            publish=identity.publish_topics,
            subscribe=identity.subscribe_topics,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"username": self.username, "password": self.password}
        if self.clientid:
            out["client_id"] = self.clientid
        if self.topic_prefix:
            out["topic_prefix"] = self.topic_prefix
        out["publish"] = self.publish
        out["subscribe"] = self.subscribe
        return out


def existing_usernames(admin: DynsecAdmin) -> set[str]:
    return {c["username"] for c in admin.list_clients()}


def create(
    admin: DynsecAdmin, identities: Sequence[tuple[Identity, str | None]]
) -> list[Credentials]:
    """Create each identity's role and client; refuses if any username exists already."""
    taken = existing_usernames(admin) & {i.username for i, _ in identities}
    if taken:
        raise ProvisionError(
            f"already registered at the broker: {', '.join(sorted(taken)[:10])}"
            f"{' ...' if len(taken) > 10 else ''} (rotate to issue a new password, "
            "or revoke first)"
        )
    creds = [Credentials.of(i, p or new_password()) for i, p in identities]
    commands = [
        c
        for (i, _), cr in zip(identities, creds, strict=True)
        for c in create_commands(i, cr.password)
    ]
    results = admin.execute(commands)
    failed = [
        f"{r.command} {cmd.get('username') or cmd.get('rolename')}: {r.error}"
        for cmd, r in zip(commands, results, strict=True)
        if r.error
    ]
    if failed:
        raise ProvisionError("the broker refused: " + "; ".join(failed[:5]))
    return creds


def rotate(admin: DynsecAdmin, username: str, password: str | None = None) -> str:
    """A new password for ``username``; the broker disconnects it at once."""
    password = password or new_password()
    result = admin.execute([set_password_command(username, password)])[0]
    if result.error:
        raise ProvisionError(f"cannot rotate {username!r}: {result.error}")
    return password


def revoke(admin: DynsecAdmin, identity: Identity) -> None:
    """Delete the client (the broker disconnects it at once) and its role."""
    results = admin.execute(delete_commands(identity))
    if results[0].error:
        raise ProvisionError(f"cannot revoke {identity.username!r}: {results[0].error}")


def revoke_all(admin: DynsecAdmin, identities: Sequence[Identity]) -> set[str]:
    """Revoke many at once; returns the usernames that existed (and are now gone)."""
    commands = [c for i in identities for c in delete_commands(i)]
    results = admin.execute(commands)
    return {
        cmd["username"]
        for cmd, r in zip(commands, results, strict=True)
        if cmd["command"] == "deleteClient" and not r.error
    }


def list_identities(admin: DynsecAdmin) -> list[dict[str, Any]]:
    """Every client the broker knows, with its kind, state and granted topics."""
    roles = admin.list_roles()
    out = []
    for c in sorted(admin.list_clients(), key=lambda c: str(c["username"])):
        acls = [a for r in c.get("roles", []) for a in roles.get(r["rolename"], [])]
        out.append(
            {
                "username": c["username"],
                "kind": kind_of(c["username"]),
                "enabled": not c.get("disabled", False),
                "publish": [a["topic"] for a in acls if a["acltype"] == "publishClientSend"],
                "subscribe": [a["topic"] for a in acls if a["acltype"] == "subscribePattern"],
            }
        )
    return out


def register_sensors(dsn: str, records: Sequence[SensorRecord]) -> None:
    """Put devices into the sensor registry; every city must be registered first."""
    with psycopg.connect(dsn, application_name="nakhon-devices") as conn:
        cities = {r.city for r in records}
        rows = conn.execute(
            "SELECT city_id FROM cities WHERE city_id = ANY(%s)", (sorted(cities),)
        ).fetchall()
        unknown = cities - {r[0] for r in rows}
        if unknown:
            raise ProvisionError(
                f"city {', '.join(sorted(unknown))} is not registered; "
                "add it first with nakhon cities add"
            )
        import_sensors(conn, records)


__all__ = [
    "Credentials",
    "DynsecError",
    "ProvisionError",
    "create",
    "list_identities",
    "register_sensors",
    "revoke",
    "rotate",
]
