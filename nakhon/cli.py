"""The ``nakhon`` command: one subcommand per service or task.

Each subcommand lives beside the code it runs and registers itself through a
``register(subparsers)`` function; adding one is one line in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from nakhon import __version__

#: Modules that each contribute subcommands, in the order ``--help`` lists them.
COMMANDS = [
    "nakhon.ingest.command",
    "nakhon.processors.command",
    "nakhon.storage.command",
    "nakhon.storage.sensors_command",
    "nakhon.storage.cities_command",
    "nakhon.identity.command",
    "nakhon.simulator.command",
    "nakhon.storage.maintenance",
    "nakhon.api.command",
    "nakhon.api.keys_command",
    "nakhon.replay.deadletters_command",
    "nakhon.replay.replay_command",
    "nakhon.storage.export_command",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nakhon",
        description=(
            "Nakhon, the ingestion backbone of a city data platform: "
            "MQTT -> Kafka -> TimescaleDB. Configuration comes from NAKHON_* "
            "environment variables (see README); defaults point at the local stack."
        ),
    )
    parser.add_argument("--version", action="version", version=f"nakhon {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S%z",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ValidationError as exc:
        # A NAKHON_* setting that does not validate: say which, without a traceback.
        print(f"nakhon: configuration error: {_settings_errors(exc)}", file=sys.stderr)
        return 2
    return code


def _settings_errors(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)


if __name__ == "__main__":
    sys.exit(main())
