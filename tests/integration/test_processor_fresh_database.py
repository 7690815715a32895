"""``nakhon processor`` on an empty database: it waits, unready, then runs; SIGTERM ends it cleanly.

A processor used to crash on a fresh database (it read ``sensors`` before the
schema existed). Now it waits for ``nakhon migrate``: running, its /readyz
answering 503, until the schema is there. SIGTERM ends it with exit code 0
whether it still waits or already consumes, with no Kafka client left unclosed.
(test_db_roles.py checks the grants that come with the migrations.)
"""

from __future__ import annotations

import asyncio

from nakhon.storage.migrate import migrate
from tests.integration.conftest import Stack
from tools.sandbox import PipelineNamespace, Service, wait_for

#: What the processor logs each time it finds the schema missing, and retries.
WAITING = "the migrated schema is not reachable"
#: What asyncio or aiokafka print for a Kafka client never stopped.
UNCLOSED = "Unclosed AIOKafka"


def _log(service: Service) -> str:
    return service.log_path.read_text(errors="replace")


async def test_a_processor_on_an_empty_database_waits_unready_then_runs_and_stops_cleanly(
    stack: Stack,
) -> None:
    with stack.fresh_database() as fresh:
        ns = PipelineNamespace()
        await ns.prepare()
        try:
            # Two processors: one stopped while it waits, one once it runs.
            waiting, running = ns.processor(), ns.processor()
            for processor in (waiting, running):
                processor.env["NAKHON_DB_PROCESSOR_DSN"] = fresh.writer_dsn
                processor.start(wait_ready=False)
            for processor in (waiting, running):
                # Twice: it found no schema, backed off, looked again, and runs on.
                await wait_for(
                    lambda p=processor: _log(p).count(WAITING) >= 2,  # type: ignore[misc]
                    30,
                    f"the processor waiting for the schema (log: {processor.log_path})",
                )
                assert processor.proc is not None and processor.proc.poll() is None
                assert processor.readiness_status() == 503

            assert await asyncio.to_thread(waiting.terminate) == 0
            assert UNCLOSED not in _log(waiting)

            await asyncio.to_thread(migrate, fresh.dsn)  # as the owner, like make up
            await wait_for(running.ready, 60, f"the processor ready (log: {running.log_path})")
            assert await asyncio.to_thread(running.terminate) == 0
            log = _log(running)
            assert UNCLOSED not in log
            assert "Traceback" not in log
        finally:
            ns.stop_all()
