"""Running a long-lived service until SIGTERM or SIGINT, then draining it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def wait_for_shutdown_signal() -> str:
    """Return the name of the first SIGTERM or SIGINT this process receives."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[str] = loop.create_future()

    def on_signal(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig.name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await received
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def run_until_signal(
    name: str,
    main: Callable[[], Awaitable[None]],
    stop: Callable[[], Awaitable[None]],
    grace_s: float = 20.0,
) -> None:
    """Run ``main`` until it returns or a shutdown signal arrives, then ``stop``.

    ``stop`` asks the service to drain: stop taking input, make durable what it
    holds, acknowledge/commit only that; ``main`` then returns by itself. Only
    if it has not within ``grace_s`` is it cancelled.
    """
    main_task = asyncio.ensure_future(main())
    signal_task = asyncio.ensure_future(wait_for_shutdown_signal())
    done, _ = await asyncio.wait({main_task, signal_task}, return_when=asyncio.FIRST_COMPLETED)
    if signal_task in done:
        log.info("%s: %s received, draining", name, signal_task.result())
    else:
        signal_task.cancel()
    await stop()
    try:
        await asyncio.wait_for(main_task, grace_s)
    except TimeoutError:
        log.warning("%s did not drain within %.0fs; cancelled", name, grace_s)
    with contextlib.suppress(asyncio.CancelledError):
        await main_task
