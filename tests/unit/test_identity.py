"""What each broker identity may do, the plugin's file, and the credentials file."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from nakhon.env_file import read_env_file, update_env_file
from nakhon.identity.dynsec import (
    create_commands,
    initial_config,
    set_role_acls,
    write_initial_config,
)
from nakhon.identity.roles import (
    DEFAULT_ACL_ACCESS,
    IdentityError,
    admin_identity,
    bridge_identity,
    device_identity,
    gateway_identity,
    kind_of,
    new_password,
)


def test_a_device_publishes_only_under_its_own_city_and_id() -> None:
    d = device_identity("aq-7", "khon_kaen")
    assert d.username == "aq-7"
    assert d.topic_prefix == "city/khon_kaen/aq-7/"
    assert d.publish_topics == ["city/khon_kaen/aq-7/#"]
    assert d.subscribe_topics == []
    assert [a.acltype for a in d.acls] == ["publishClientSend"]


@pytest.mark.parametrize(
    ("sensor", "city"),
    [
        ("aq/7", "bangkok"),
        ("aq+", "bangkok"),
        ("#", "bangkok"),
        ("AQ-7", "bangkok"),
        ("aq-7", "khon-kaen"),
        ("aq-7", "khon/kaen"),
        ("", "bangkok"),
        ("a" * 65, "bangkok"),
    ],
)
def test_ids_that_could_widen_a_device_acl_are_refused(sensor: str, city: str) -> None:
    with pytest.raises(IdentityError):
        device_identity(sensor, city)


def test_a_bridge_gets_only_its_filters_and_never_everything() -> None:
    b = bridge_identity("ttn", ["v3/city-air@ttn/#", "application/7/#"])
    assert b.username == "bridge:ttn"
    assert b.publish_topics == ["v3/city-air@ttn/#", "application/7/#"]
    for wide in (
        "#",
        "+/#",
        "$share/nakhon/city/#",
        "$CONTROL/dynamic-security/v1",
        "a/b#",
        "a/#/b",
        "a+/b",
    ):
        with pytest.raises(IdentityError):
            bridge_identity("x", [wide])
    with pytest.raises(IdentityError):
        bridge_identity("x", [])


def test_a_gateway_reads_only_through_its_share_group_with_a_random_client_id() -> None:
    g1 = gateway_identity("local", "nakhon", ["city/#", "v3/+/devices/+/up"])
    g2 = gateway_identity("local", "nakhon", ["city/#"])
    assert g1.subscribe_topics == ["$share/nakhon/city/#", "$share/nakhon/v3/+/devices/+/up"]
    assert g1.publish_topics == []
    receive = [a.topic for a in g1.acls if a.acltype == "publishClientReceive"]
    assert receive == ["city/#", "v3/+/devices/+/up"]
    assert g1.clientid and g2.clientid and g1.clientid != g2.clientid
    assert len(g1.clientid.rsplit("-", 1)[1]) == 24  # 96 random bits


def test_a_gateway_without_a_share_group_reads_its_filters_themselves() -> None:
    g = gateway_identity("local", None, ["city/#", "v3/+/devices/+/up"])
    assert g.subscribe_topics == ["city/#", "v3/+/devices/+/up"]  # never a $share/... form
    assert gateway_identity("local", "", ["city/#"]).subscribe_topics == ["city/#"]
    receive = [a.topic for a in g.acls if a.acltype == "publishClientReceive"]
    assert receive == ["city/#", "v3/+/devices/+/up"]
    with pytest.raises(IdentityError):
        gateway_identity("local", None, ["#"])


def test_usernames_of_kinds_cannot_collide() -> None:
    assert kind_of("aq-7") == "device"
    assert kind_of("bridge:ttn") == "bridge"
    assert kind_of("gateway:local") == "gateway"
    assert kind_of(admin_identity().username) == "admin"
    assert ":" in admin_identity().username  # no sensor id can take the admin's name


def test_nothing_is_open_by_default() -> None:
    assert DEFAULT_ACL_ACCESS == {
        "publishClientSend": False,
        "publishClientReceive": False,
        "subscribe": False,
        "unsubscribe": True,
    }


def test_passwords_are_long_and_random() -> None:
    passwords = {new_password() for _ in range(100)}
    assert len(passwords) == 100
    assert all(len(p) >= 32 for p in passwords)


def test_create_commands_carry_role_acls_and_fixed_client_id() -> None:
    g = gateway_identity("local", "nakhon", ["city/#"])
    role, client = create_commands(g, "pw")
    assert role["command"] == "createRole" and role["rolename"] == "gateway:local"
    assert {"acltype": "subscribePattern", "topic": "$share/nakhon/city/#", "allow": True} in role[
        "acls"
    ]
    assert client["command"] == "createClient"
    assert client["clientid"] == g.clientid
    assert client["roles"] == [{"rolename": "gateway:local"}]


def test_the_initial_file_holds_hashes_mosquitto_can_check(tmp_path: Path) -> None:
    path = tmp_path / "dynsec" / "dynamic-security.json"
    write_initial_config(path, [(admin_identity(), "admin-secret")])
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert "admin-secret" not in text
    client = json.loads(text)["clients"][0]
    # The plugin's check: PBKDF2-HMAC-SHA512 over the password with the stored salt.
    digest = hashlib.pbkdf2_hmac(
        "sha512", b"admin-secret", base64.b64decode(client["salt"]), client["iterations"], 64
    )
    assert base64.b64encode(digest).decode() == client["password"]
    with pytest.raises(FileExistsError):
        write_initial_config(path, [(admin_identity(), "again")])


def test_an_earlier_gateway_role_is_brought_up_to_date_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dynamic-security.json"
    shared = gateway_identity("local", "nakhon", ["city/#"])
    write_initial_config(path, [(admin_identity(), "a"), (shared, "g")])
    clients_before = json.loads(path.read_text())["clients"]
    plain = gateway_identity("local", None, ["city/#"], clientid=shared.clientid)
    assert set_role_acls(path, plain) is True
    config = json.loads(path.read_text())
    [role] = [r for r in config["roles"] if r["rolename"] == "gateway:local"]
    assert [a["topic"] for a in role["acls"] if a["acltype"] == "subscribePattern"] == ["city/#"]
    assert config["clients"] == clients_before  # passwords and client ids untouched
    assert path.stat().st_mode & 0o777 == 0o600
    assert set_role_acls(path, plain) is False  # already so: the file is left alone


def test_the_initial_file_refuses_by_default() -> None:
    config = initial_config([(admin_identity(), "x")])
    assert config["defaultACLAccess"] == DEFAULT_ACL_ACCESS
    assert [r["rolename"] for r in config["roles"]] == ["admin:nakhon"]


def test_env_file_is_private_and_keeps_other_lines(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "local.env"
    update_env_file(path, {"NAKHON_DB_DSN": "postgresql://a@b/c"})
    update_env_file(path, {"NAKHON_MQTT_PASSWORD": "p-1_x", "NAKHON_MQTT_CLIENT_ID": "gw-1"})
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_env_file(path) == {
        "NAKHON_DB_DSN": "postgresql://a@b/c",
        "NAKHON_MQTT_PASSWORD": "p-1_x",
        "NAKHON_MQTT_CLIENT_ID": "gw-1",
    }
    with pytest.raises(ValueError, match="quotes or newlines"):
        update_env_file(path, {"NAKHON_X": "a'b"})


def test_settings_read_the_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nakhon.config import load_settings

    path = tmp_path / "local.env"
    update_env_file(path, {"NAKHON_MQTT_ADMIN_PASSWORD": "s3cret", "NAKHON_MQTT_PORT": "8883"})
    monkeypatch.setenv("NAKHON_ENV_FILE", str(path))
    monkeypatch.setenv("NAKHON_MQTT_PORT", "1884")  # the environment wins over the file
    settings = load_settings()
    assert settings.mqtt.admin_password is not None
    assert settings.mqtt.admin_password.get_secret_value() == "s3cret"
    assert settings.mqtt.port == 1884


def test_settings_read_several_env_files_the_later_winning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second gateway of the stack: the stack's file, then its own login's."""
    from nakhon.config import load_settings

    stack, own = tmp_path / "local.env", tmp_path / "gateway-2.env"
    update_env_file(
        stack, {"NAKHON_MQTT_USERNAME": "gateway:local", "NAKHON_DB_DSN": "postgresql://x"}
    )
    update_env_file(own, {"NAKHON_MQTT_USERNAME": "gateway:local-2"})
    missing = tmp_path / "absent.env"
    monkeypatch.setenv("NAKHON_ENV_FILE", f"{stack}:{missing}:{own}")
    settings = load_settings()
    assert settings.mqtt.username == "gateway:local-2"
    assert settings.db.dsn.get_secret_value() == "postgresql://x"


def test_a_citys_broker_file_overrides_the_mqtt_settings_for_that_city_only(
    tmp_path: Path,
) -> None:
    from nakhon.config import MqttSettings

    south = tmp_path / "broker-south.env"
    update_env_file(
        south,
        {
            "NAKHON_MQTT_HOST": "mqtt-south.example",
            "NAKHON_MQTT_PORT": "8883",
            "NAKHON_MQTT_ADMIN_PASSWORD": "south-admin",
            "NAKHON_MQTT_TOPIC_FILTERS": '["city/phuket/#"]',
            "NAKHON_DB_DSN": "postgresql://not-mqtt",
        },
    )
    base = MqttSettings(host="mqtt-a", port=1883, city_brokers={"phuket": south})
    phuket = base.for_city("phuket")
    assert (phuket.host, phuket.port) == ("mqtt-south.example", 8883)
    assert phuket.admin_password is not None
    assert phuket.admin_password.get_secret_value() == "south-admin"
    assert phuket.topic_filters == ["city/phuket/#"]
    assert base.for_city("bangkok") is base
    with pytest.raises(ValueError, match="no file"):
        MqttSettings(city_brokers={"lampang": tmp_path / "absent.env"}).for_city("lampang")
