"""Mosquitto's dynamic security plugin: its commands, its file, and an admin client.

The plugin keeps clients (username, password hash, optional fixed client id,
roles) and roles (ACLs) in one JSON file, and is administered over MQTT: a
JSON ``{"commands": [...]}`` published to ``$CONTROL/dynamic-security/v1``
is answered on ``.../response``, one response per command, in order
(https://mosquitto.org/documentation/dynamic-security/). Deleting or disabling
a client, or setting its password, disconnects it at once.

:func:`initial_config` writes the file a fresh broker starts from (the admin
and the first gateway), so no password ever appears on a command line.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from nakhon.identity.roles import ADMIN_USERNAME, CONTROL_TOPIC, DEFAULT_ACL_ACCESS, Identity
from nakhon.mqtt_connection import MqttEndpoint

#: The plugin's own hash: PBKDF2-HMAC-SHA512, 12-byte salt; 101 rounds is what
#: the plugin itself uses for passwords it sets (mosquitto 2.0).
_PBKDF2_ITERATIONS = 101
#: Commands per control message: one answer must fit comfortably in a packet.
_COMMANDS_PER_MESSAGE = 200


class DynsecError(RuntimeError):
    """The broker could not be reached, refused the admin, or refused a command."""


@dataclass(frozen=True, slots=True)
class CommandResult:
    command: str
    error: str | None
    data: dict[str, Any] | None


def create_commands(identity: Identity, password: str) -> list[dict[str, Any]]:
    """The role (with its ACLs) and the client holding it, as two plugin commands."""
    client: dict[str, Any] = {
        "command": "createClient",
        "username": identity.username,
        "password": password,
        "textname": identity.kind,
        "roles": [{"rolename": identity.rolename}],
    }
    if identity.clientid:
        client["clientid"] = identity.clientid
    return [
        {
            "command": "createRole",
            "rolename": identity.rolename,
            "acls": [a.to_json() for a in identity.acls],
        },
        client,
    ]


def delete_commands(identity: Identity) -> list[dict[str, Any]]:
    """Delete the client (which disconnects it) and its role."""
    return [
        {"command": "deleteClient", "username": identity.username},
        {"command": "deleteRole", "rolename": identity.rolename},
    ]


def set_password_command(username: str, password: str) -> dict[str, Any]:
    return {"command": "setClientPassword", "username": username, "password": password}


def hash_password(password: str, salt: bytes | None = None) -> dict[str, Any]:
    """The ``password``, ``salt`` and ``iterations`` fields of a client in the plugin's file."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS, 64)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": _PBKDF2_ITERATIONS,
    }


def initial_config(identities: Sequence[tuple[Identity, str]]) -> dict[str, Any]:
    """The plugin's file for a fresh broker: these clients with these passwords, nothing open."""
    clients = []
    for identity, password in identities:
        client: dict[str, Any] = {
            "username": identity.username,
            "textname": identity.kind,
            **hash_password(password),
            "roles": [{"rolename": identity.rolename}],
        }
        if identity.clientid:
            client["clientid"] = identity.clientid
        clients.append(client)
    return {
        "clients": clients,
        "groups": [],
        "roles": [
            {"rolename": i.rolename, "acls": [a.to_json() for a in i.acls]} for i, _ in identities
        ],
        "defaultACLAccess": dict(DEFAULT_ACL_ACCESS),
    }


def write_initial_config(path: Path, identities: Sequence[tuple[Identity, str]]) -> None:
    """Create the plugin's file (mode 600); refuses to overwrite one that exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = path.open("x", encoding="utf-8")
    with fd:
        path.chmod(0o600)
        json.dump(initial_config(identities), fd, indent=1)


def set_role_acls(path: Path, identity: Identity) -> bool:
    """Give ``identity``'s role in the plugin's file exactly its ACLs; True if that changed it.

    For a broker that is not running (the plugin rewrites its file as it runs):
    ``nakhon broker init`` brings the local gateway's role up to date this way.
    The file keeps its owner and mode.
    """
    config = json.loads(path.read_text(encoding="utf-8"))
    wanted = [a.to_json() for a in identity.acls]
    for role in config.get("roles", []):
        if role.get("rolename") == identity.rolename:
            if role.get("acls") == wanted:
                return False
            role["acls"] = wanted
            break
    else:
        return False
    before = path.stat()
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1)
    if os.geteuid() == 0:
        os.chown(tmp, before.st_uid, before.st_gid)
    os.replace(tmp, path)
    return True


class DynsecAdmin:
    """A short-lived admin connection that sends plugin commands and waits for the answers.

    Use it as a context manager. ``execute`` sends commands in messages of up
    to 200, each tagged with a correlation id, and returns one
    :class:`CommandResult` per command, in order.
    """

    def __init__(self, endpoint: MqttEndpoint, password: str, timeout_s: float = 30.0) -> None:
        self._endpoint = endpoint
        self._timeout_s = timeout_s
        self._client = endpoint.client(client_id=f"nakhon-admin-{secrets.token_hex(6)}")
        self._client.username_pw_set(ADMIN_USERNAME, password)
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._refused: str | None = None
        self._answers: dict[str, list[dict[str, Any]]] = {}
        self._answered = threading.Condition()
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    @property
    def endpoint(self) -> MqttEndpoint:
        """The broker this admin connection is to."""
        return self._endpoint

    def __enter__(self) -> DynsecAdmin:
        try:
            self._endpoint.connect(self._client)
        except OSError as exc:
            raise DynsecError(f"cannot reach the MQTT broker at {self._endpoint}: {exc}") from exc
        self._client.loop_start()
        if not self._connected.wait(self._timeout_s) or self._refused:
            self._close()
            raise DynsecError(
                f"the broker at {self._endpoint} refused the admin "
                f"({self._refused or 'no answer'}); are NAKHON_MQTT_ADMIN_PASSWORD and "
                "the broker's dynamic security plugin set up? (make up does both)"
            )
        self._client.subscribe(CONTROL_TOPIC + "/response", qos=1)
        if not self._subscribed.wait(self._timeout_s):
            self._close()
            raise DynsecError("the broker did not confirm the admin's subscription")
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def execute(self, commands: Sequence[dict[str, Any]]) -> list[CommandResult]:
        results: list[CommandResult] = []
        for start in range(0, len(commands), _COMMANDS_PER_MESSAGE):
            results += self._execute_chunk(commands[start : start + _COMMANDS_PER_MESSAGE])
        return results

    def execute_ok(self, commands: Sequence[dict[str, Any]]) -> list[CommandResult]:
        """Like :meth:`execute`, raising :class:`DynsecError` on the first refused command."""
        results = self.execute(commands)
        for cmd, res in zip(commands, results, strict=True):
            if res.error:
                what = cmd.get("username") or cmd.get("rolename") or ""
                raise DynsecError(f"{res.command} {what}: {res.error}")
        return results

    def _execute_chunk(self, commands: Sequence[dict[str, Any]]) -> list[CommandResult]:
        tag = secrets.token_hex(8)
        tagged = [{**c, "correlationData": f"{tag}-{i}"} for i, c in enumerate(commands)]
        with self._answered:
            self._answers[tag] = []
        self._client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}), qos=1)
        with self._answered:
            done = self._answered.wait_for(
                lambda: len(self._answers[tag]) >= len(commands), self._timeout_s
            )
            answers = self._answers.pop(tag)
        if not done:
            raise DynsecError(
                f"the broker answered {len(answers)} of {len(commands)} commands "
                f"within {self._timeout_s:.0f}s"
            )
        by_id = {a.get("correlationData"): a for a in answers}
        out = []
        for i, c in enumerate(commands):
            a = by_id.get(f"{tag}-{i}", {})
            out.append(CommandResult(c["command"], a.get("error"), a.get("data")))
        return out

    # list helpers ----------------------------------------------------------

    def list_clients(self) -> list[dict[str, Any]]:
        """Every client with its roles (the plugin's ``listClients``, verbose)."""
        res = self.execute_ok([{"command": "listClients", "verbose": True, "count": -1}])
        clients: list[dict[str, Any]] = (res[0].data or {}).get("clients", [])
        return clients

    def list_roles(self) -> dict[str, list[dict[str, Any]]]:
        """Role name -> its ACLs."""
        res = self.execute_ok([{"command": "listRoles", "verbose": True, "count": -1}])
        roles = (res[0].data or {}).get("roles", [])
        return {r["rolename"]: r.get("acls", []) for r in roles}

    # paho's thread ----------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            self._refused = str(reason)
        self._connected.set()

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        if all(not r.is_failure for r in reasons):
            self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        with self._answered:
            for answer in body.get("responses", []):
                tag = str(answer.get("correlationData", "")).rsplit("-", 1)[0]
                if tag in self._answers:
                    self._answers[tag].append(answer)
            self._answered.notify_all()
