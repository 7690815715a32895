"""Nakhon: the ingestion backbone of a smart-city data platform.

Sensors publish over MQTT; ``nakhon.ingest`` forwards the raw bytes to Kafka;
``nakhon.processors`` decodes, validates and normalizes them; ``nakhon.storage``
writes them to TimescaleDB; ``nakhon.api`` serves them to city apps.
"""

__version__ = "0.1.0"
