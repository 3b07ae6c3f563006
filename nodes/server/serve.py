"""Serve LKMs on real ports in wall-clock time, until told to stop.

:class:`ServedNode` wires one LKM actor to its aiohttp application and a TCP site (plain HTTP, or
mutual TLS with the node's certificate), with its metrics at ``/metrics`` and bounded waits for
slow or half-open connections (:class:`ServerTimeouts`). :func:`serve_forever` runs one node from
a ``NodeConfig`` until SIGINT/SIGTERM, then shuts down in order: stop accepting and finish
in-flight requests, then stop the actor (which closes its SQLite file), so no acknowledged write
is lost.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import ssl
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from aiohttp import web

from nodes.keynode import (
    Directory,
    KeySupply,
    LocalKeyManager,
    LocalKeySupply,
    NodeConfig,
    Observer,
    ignore,
)
from nodes.server.access import admin_notice
from nodes.server.api import create_app
from nodes.server.observability import NodeMetrics, install, tee
from nodes.server.pki import server_ssl_context
from nodes.server.protocol import JsonErrorRunner
from simulator import ActorRef, ActorSystem, Clock, WallClock


@dataclass(frozen=True, slots=True)
class ServerTimeouts:
    """Wall-time bounds on a client connection (transport guards; simulated time is unaffected).

    ``idle_s``: a connection that has not sent a whole request head by then is closed (aiohttp's
    keep-alive timer, armed at connect and after each response); ``body_s``: a body that does not
    arrive in time is answered 408; ``linger_s``: how long the rest of an unread body is drained
    before the connection is closed. A TLS handshake is bounded by asyncio's 60 s."""

    idle_s: float = 15.0
    body_s: float = 10.0
    linger_s: float = 2.0


class ServedNode:
    """One LKM actor behind one aiohttp site."""

    def __init__(self, config: NodeConfig, system: ActorSystem, clock: Clock,
                 supply: KeySupply, observe: Observer = ignore,
                 directory: Directory | None = None,
                 timeouts: ServerTimeouts = ServerTimeouts(),
                 app_hooks: Sequence[Callable[[web.Application], None]] = ()) -> None:
        self.config = config
        self.app_hooks = tuple(app_hooks)
        self.system = system
        self.clock = clock
        self.timeouts = timeouts
        self.metrics = NodeMetrics(config.local_km_id, clock)
        self.lkm = LocalKeyManager(config, clock, supply, tee(observe, self.metrics.observe),
                                   directory)
        self.ref: ActorRef[LocalKeyManager] | None = None
        self.runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        self.ref = await self.system.spawn(self.lkm)
        app = create_app(self.ref, self.config, self.clock, body_timeout_s=self.timeouts.body_s)
        install(app, self.ref, self.metrics)
        for hook in self.app_hooks:  # e.g. the request recorder of `--record`
            hook(app)
        self.runner = JsonErrorRunner(app, access_log=None, shutdown_timeout=10.0,
                                    keepalive_timeout=self.timeouts.idle_s,
                                    lingering_time=self.timeouts.linger_s)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.config.host, self.config.port,
                           ssl_context=self.ssl_context())
        await site.start()
        self.port = int(self.runner.addresses[0][1])  # the bound port (PORT=0 picks a free one)

    def ssl_context(self) -> ssl.SSLContext | None:
        tls = self.config.tls
        if not self.config.use_https or tls is None:
            return None
        return server_ssl_context(tls.ca_cert, tls.cert, tls.key)

    @property
    def url(self) -> str:
        scheme = "https" if self.config.use_https else "http"
        return f"{scheme}://{self.config.host}:{self.port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.ref is not None:
            await self.system.stop(self.lkm.name)
            self.ref = None


async def serve_forever(config: NodeConfig, announce: Callable[[str], Any] = print,
                        stop: asyncio.Event | None = None) -> None:
    """Serve one node until SIGINT/SIGTERM (or ``stop`` is set); one log line per refused
    request on stderr (every request with ``qkdsim.access`` at DEBUG) unless the process
    configured logging already."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    system = ActorSystem()
    node = ServedNode(config, system, WallClock(), LocalKeySupply(secrets.token_bytes))
    await node.start()
    try:
        announce(f"qkdsim LKM {config.local_km_id} (KME {config.kme_id}) serving ETSI GS QKD 014 "
                 f"at {node.url} with database {config.db_path}")
        announce(admin_notice(config))
        await stop.wait()
        announce("shutting down")
    finally:
        await node.stop()
        await system.stop_all()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
