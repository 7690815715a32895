"""Raw and dead-letter retention: the settings and the topics make up creates agree."""

from __future__ import annotations

import re
from pathlib import Path

from nakhon.config import KafkaSettings, ProcessorSettings

KAFKA_SH = Path(__file__).resolve().parents[2] / "deploy" / "local" / "services" / "kafka.sh"


def _default(variable: str) -> int:
    match = re.search(rf'"\$\{{{variable}:-(\d+)\}}"', KAFKA_SH.read_text())
    assert match, f"{variable} has no default in {KAFKA_SH}"
    return int(match.group(1))


def test_make_up_creates_the_topics_with_the_settings_defaults() -> None:
    settings = KafkaSettings()
    assert _default("NAKHON_KAFKA_RAW_RETENTION_DAYS") == settings.raw_retention_days
    assert _default("NAKHON_KAFKA_DEADLETTER_RETENTION_DAYS") == settings.deadletter_retention_days


def test_raw_outlives_the_backfill_horizon_so_a_replay_covers_it() -> None:
    assert KafkaSettings().raw_retention_days > ProcessorSettings().backfill_horizon_days
    assert KafkaSettings().deadletter_retention_days >= 90
