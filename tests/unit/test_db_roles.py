"""The roles' passwords, DSNs and SQL (nakhon/storage/roles.py), without a database."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr

from nakhon.cli import main
from nakhon.config import DbSettings, MissingDsnError, Settings
from nakhon.env_file import read_env_file
from nakhon.storage.roles import (
    Endpoint,
    env_values,
    init_roles_sql,
    role_passwords,
    scram_verifier,
)


def test_scram_verifier_matches_rfc_7677() -> None:
    # RFC 7677's example: password "pencil", this salt, 4096 iterations. Its
    # ServerSignature for the given AuthMessage proves our ServerKey.
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    verifier = scram_verifier("pencil", salt)
    method, rest = verifier.split("$", 1)
    iterations_salt, keys = rest.split("$")
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    assert (method, iterations_salt) == ("SCRAM-SHA-256", "4096:W22ZaJ0SNY7soEsUEjb6gQ==")
    auth_message = (
        b"n=user,r=rOprNGfwEbeRWgbNEkqO,"
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    )
    signature = hmac.digest(server_key, auth_message, "sha256")
    assert base64.b64encode(signature) == b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    assert len(stored_key) == hashlib.sha256().digest_size


def test_passwords_are_kept_once_made() -> None:
    first = role_passwords({})
    assert len(set(first.values())) == 3
    env = env_values(Endpoint(), first)
    assert urlsplit(env["NAKHON_DB_PROCESSOR_DSN"]).username == "nakhon_writer"
    assert env["NAKHON_DB_PROCESSOR_DSN"] == env["NAKHON_DB_MAINTAIN_DSN"]
    assert urlsplit(env["NAKHON_DB_API_DSN"]).username == "nakhon_reader"
    assert urlsplit(env["NAKHON_DB_DSN"]).username == "nakhon_owner"
    assert role_passwords(env) == first
    # A DSN of another role (an operator's own) is not taken for ours.
    other = env | {"NAKHON_DB_DSN": "postgresql://someone:secret@db/nakhon"}
    assert role_passwords(other)["nakhon_owner"] != "secret"


def test_the_sql_holds_verifiers_never_passwords() -> None:
    passwords = role_passwords({})
    statements = init_roles_sql("nakhon", passwords, legacy_role="nakhon")
    for password in passwords.values():
        assert password not in statements
    assert statements.count("PASSWORD 'SCRAM-SHA-256$4096:") == 3
    assert "NOSUPERUSER NOCREATEDB NOCREATEROLE" in statements
    assert "REASSIGN OWNED BY nakhon TO nakhon_owner" in statements
    assert "REVOKE ALL ON DATABASE nakhon FROM PUBLIC" in statements
    assert "GRANT CONNECT ON DATABASE nakhon TO nakhon_reader" in statements
    assert "TEMPORARY ON DATABASE nakhon TO nakhon_owner, nakhon_writer" in statements


@pytest.mark.parametrize(
    ("database", "legacy"), [("nakhon; DROP", None), ("nakhon", "nakhon_owner"), ("x", "a'b")]
)
def test_bad_names_are_refused(database: str, legacy: str | None) -> None:
    with pytest.raises(ValueError, match=r"name|role"):
        init_roles_sql(database, role_passwords({}), legacy)


def test_init_roles_writes_the_env_file_and_prints_sql(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = tmp_path / "secrets" / "local.env"
    assert main(["db", "init-roles", "--env-file", str(env_file), "--port", "5433"]) == 0
    first = read_env_file(env_file)
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert urlsplit(first["NAKHON_DB_API_DSN"]).port == 5433
    out = capsys.readouterr().out
    assert "CREATE ROLE nakhon_reader" in out
    assert main(["db", "init-roles", "--env-file", str(env_file), "--port", "5433"]) == 0
    assert read_env_file(env_file) == first  # idempotent: same passwords


def test_a_service_without_its_dsn_refuses_rather_than_run_as_the_owner() -> None:
    db = DbSettings()
    with pytest.raises(MissingDsnError, match="NAKHON_DB_PROCESSOR_DSN"):
        db.service_dsn("processor")
    db = DbSettings(api_dsn=SecretStr("postgresql://nakhon_reader:x@h/nakhon"))
    assert db.service_dsn("api").startswith("postgresql://nakhon_reader:")


def test_the_dsns_come_from_nakhon_db_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAKHON_DB_MAINTAIN_DSN", "postgresql://nakhon_writer:w@h/nakhon")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.db.service_dsn("maintain") == "postgresql://nakhon_writer:w@h/nakhon"


@pytest.mark.parametrize("command", ["processor", "maintain", "api"])
def test_each_service_exits_with_a_message_when_its_dsn_is_unset(
    command: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NAKHON_ENV_FILE", "/dev/null")  # not the checkout's local.env
    for variable in ("PROCESSOR", "MAINTAIN", "API"):
        monkeypatch.delenv(f"NAKHON_DB_{variable}_DSN", raising=False)
    assert main([command]) == 2
    assert f"NAKHON_DB_{command.upper()}_DSN is not set" in caplog.text
