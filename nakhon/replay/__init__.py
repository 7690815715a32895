"""Second chances for data: inspect dead letters, put records back through the pipeline.

``nakhon deadletters stats|show`` reads ``nakhon.deadletter``; ``nakhon replay
deadletters|raw`` produces records back onto ``nakhon.raw`` with their
original key, bytes and ``received_at``, so the processors judge and store
them as if they had just arrived at that time. The readings' unique key
(sensor, metric, time) makes any replay idempotent.

This package talks to Kafka only (:mod:`nakhon.kafka_client`); it imports
nothing of the processors, the gateway or the database: the wire formats it
reads and writes are :mod:`nakhon.domain.raw_record` and the dead-letter
headers of ``docs/architecture.md``.
"""
