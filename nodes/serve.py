"""Serve LKMs on real ports in wall-clock time, until told to stop.

:class:`ServedNode` wires one LKM actor to its aiohttp application and a TCP site (plain HTTP, or
mutual TLS with the node's certificate). :func:`serve_forever` runs one node from a
:class:`~nodes.config.NodeConfig` until SIGINT/SIGTERM, then shuts down in order: stop accepting
and finish in-flight requests, then stop the actor (which closes its SQLite file), so no
acknowledged write is lost.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import ssl
from typing import Any, Callable

from aiohttp import web

from nodes.api import create_app
from nodes.config import NodeConfig
from nodes.lkm import LocalKeyManager, Observer, _ignore
from nodes.pki import server_ssl_context
from nodes.supply import KeySupply, LocalKeySupply
from simulator.actor import ActorRef, ActorSystem
from simulator.clock import Clock, WallClock


class ServedNode:
    """One LKM actor behind one aiohttp site."""

    def __init__(self, config: NodeConfig, system: ActorSystem, clock: Clock,
                 supply: KeySupply, observe: Observer = _ignore) -> None:
        self.config = config
        self.system = system
        self.lkm = LocalKeyManager(config, clock, supply, observe)
        self.ref: ActorRef[LocalKeyManager] | None = None
        self.runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        self.ref = await self.system.spawn(self.lkm)
        self.runner = web.AppRunner(create_app(self.ref, self.config), access_log=None,
                                    shutdown_timeout=10.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.config.host, self.config.port,
                           ssl_context=self.ssl_context())
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[union-attr]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

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
    """Serve one node until SIGINT/SIGTERM (or ``stop`` is set)."""
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
        await stop.wait()
        announce("shutting down")
    finally:
        await node.stop()
        await system.stop_all()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
