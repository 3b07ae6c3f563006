"""Serve a scenario with its dashboard beside it (``--serve --dashboard [HOST:]PORT``).

The dashboard runs on the served network's own event loop, on its own port: it listens to the
run's recorder (:class:`LiveView`) and breaks things through the same :class:`OutageControl`
the pytest plugin uses, so an outage started from the page is recorded in ``events.jsonl``
like a scheduled one (and, with ``--record``, in the trace, which replays it).
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from nodes.dashboard.app import Dashboard
from nodes.dashboard.live import LiveView
from nodes.keynode import is_loopback
from nodes.run import Network, OutageControl, RunOutcome, Scenario, serve


class AddressError(ValueError):
    """A --dashboard value that is not [HOST:]PORT."""


def parse_address(text: str) -> tuple[str, int]:
    """``PORT`` (loopback) or ``HOST:PORT``; port 0 picks a free one."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise AddressError(f"--dashboard: {text!r} is not [HOST:]PORT")
    return host, int(port)


def needs_token(host: str) -> bool:
    """Beyond loopback the control API needs a token (the node's own rule for its admin
    routes, :func:`nodes.keynode.is_loopback`)."""
    return not is_loopback(host)


async def serve_with_dashboard(scenario: Scenario, out_dir: Path, record: Path | None,
                               announce: Callable[[str], Any], address: str,
                               stop: asyncio.Event | None = None) -> RunOutcome:
    host, port = parse_address(address)
    token = secrets.token_urlsafe(18) if needs_token(host) else None
    live = LiveView()
    runners: list[web.AppRunner] = []
    starting: list[asyncio.Future[None]] = []

    async def start(dashboard: Dashboard) -> None:
        runner = web.AppRunner(dashboard.app(), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, host, port).start()
        bound = runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        announce(f"  dashboard: http://{shown}:{bound}/" + (f"?token={token}" if token else "")
                 + ("" if token else " (loopback only)"))

    def ready(network: Network, control: OutageControl) -> None:
        network.sim.recorder.listeners.append(live)
        starting.append(asyncio.ensure_future(start(Dashboard(scenario, live, control, token))))

    try:
        return await serve(scenario, out_dir, record, announce, stop, ready)
    finally:
        await asyncio.gather(*starting, return_exceptions=True)
        for runner in runners:
            await runner.cleanup()
