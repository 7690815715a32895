"""Second chances for data: inspect dead letters, put records back through the pipeline.

``nakhon deadletters stats|show`` reads ``nakhon.deadletter``; ``nakhon replay
deadletters|raw`` produces records back onto ``nakhon.raw`` with their
original key, bytes and ``received_at``, so the processors judge and store
them as if they had just arrived at that time. The readings' unique key
(sensor, metric, time) makes any replay idempotent.

The replays that send records talk to Kafka only (:mod:`nakhon.kafka_client`):
the wire formats they read and write are :mod:`nakhon.domain.raw_record` and
the dead-letter headers of ``docs/architecture.md``. ``replay raw
--overwrite`` (:mod:`nakhon.replay.overwrite`) alone runs the processors'
pipeline in-process and writes with :mod:`nakhon.storage` as the schema
owner, which is why this package sits above the processors in the import
layers (``pyproject.toml``); it imports nothing of the API, the gateway or
the identities.
"""
