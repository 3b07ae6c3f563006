"""The client and the load: one keep-alive session per SAE, the units of work, one phase."""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from common import percentile, system_busy_s, thread_cpu_s

from .constants import ALICE, BOB, DIRECTIONS


class BadReply(Exception):
    pass


@dataclass
class Target:
    """One server to drive: the LKM (ETSI routes) or the bare ceiling (``/bare/{body}``)."""

    kind: str  # "lkm", "ref" (an LKM of the commit measured against) or "bare"
    transport: str  # "http" or "mtls"
    base: str
    pki: Path | None = None
    pid: int | None = None

    def status_url(self, slave: str) -> str:
        return (f"{self.base}/bare/status" if self.kind == "bare"
                else f"{self.base}/api/v1/keys/{slave}/status")

    def enc_url(self, slave: str, size: int) -> str:
        return (f"{self.base}/bare/enc_{size}" if self.kind == "bare"
                else f"{self.base}/api/v1/keys/{slave}/enc_keys")

    def dec_url(self, master: str) -> str:
        return f"{self.base}/api/v1/keys/{master}/dec_keys"


class Client:
    """One keep-alive session per SAE identity (a TLS identity belongs to the connection)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.sessions: dict[str, Any] = {}

    async def __aenter__(self) -> Self:
        import aiohttp

        for sae in (ALICE, BOB):
            ssl_ctx: Any = False
            headers = {}
            if self.target.transport == "mtls":
                from nodes.server.pki import client_ssl_context

                assert self.target.pki is not None
                ssl_ctx = client_ssl_context(self.target.pki / "ca.crt",
                                             self.target.pki / f"{sae}.crt",
                                             self.target.pki / f"{sae}.key")
            else:
                headers["X-SAE-ID"] = sae
            connector = aiohttp.TCPConnector(limit=0, ssl=ssl_ctx)
            self.sessions[sae] = aiohttp.ClientSession(
                connector=connector, headers=headers,
                timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for session in self.sessions.values():
            await session.close()

    async def get(self, sae: str, url: str) -> Any:
        async with self.sessions[sae].get(url) as reply:
            body = await reply.read()
            if reply.status != 200:
                raise BadReply(f"GET {url}: {reply.status} {body[:200]!r}")
        return json.loads(body)

    async def post(self, sae: str, url: str, payload: bytes, ok: int = 200) -> Any:
        async with self.sessions[sae].post(
                url, data=payload, headers={"Content-Type": "application/json"}) as reply:
            body = await reply.read()
            if reply.status != ok:
                raise BadReply(f"POST {url}: {reply.status} {body[:200]!r}")
        return json.loads(body)


ENC_PAYLOAD = {size: json.dumps({"number": 1, "size": size}).encode() for size in (256, 8192)}


def make_unit(client: Client, workload: str) -> Callable[[int], Awaitable[None]]:
    """The unit of work for ``workload``: a coroutine function of the direction (0 or 1)."""
    target = client.target

    async def status(direction: int) -> None:
        master, slave = DIRECTIONS[direction]
        view = await client.get(master, target.status_url(slave))
        if "stored_key_count" not in view:
            raise BadReply("status without stored_key_count")

    def enc(size: int) -> Callable[[int], Awaitable[None]]:
        payload = ENC_PAYLOAD[size]

        async def unit(direction: int) -> None:
            master, slave = DIRECTIONS[direction]
            reply = await client.post(master, target.enc_url(slave, size), payload)
            if len(reply["keys"]) != 1:
                raise BadReply("enc_keys did not return one key")
        return unit

    async def pair(direction: int) -> None:
        master, slave = DIRECTIONS[direction]
        enc_reply = await client.post(master, target.enc_url(slave, 8192), ENC_PAYLOAD[8192])
        key = enc_reply["keys"][0]
        payload = json.dumps({"key_IDs": [{"key_ID": key["key_ID"]}]}).encode()
        dec_reply = await client.post(slave, target.dec_url(master), payload)
        if dec_reply["keys"] != [key]:
            raise BadReply("dec_keys returned other bytes than enc_keys")

    units = {"status": status, "enc_256": enc(256), "enc_8192": enc(8192), "pair_8192": pair}
    return units[workload]


async def drive(target: Target, workload: str, concurrency: int, seconds: float,
                warmup_s: float) -> dict[str, Any]:
    """Run one phase; return units/s, latency percentiles, errors and CPU used."""
    latencies: list[float] = []
    errors: list[str] = []
    window: dict[str, Any] = {}
    stopping = asyncio.Event()
    completed = 0

    async with Client(target) as client:
        unit = make_unit(client, workload)

        async def worker(w: int) -> None:
            nonlocal completed
            direction = w % 2
            while not stopping.is_set():
                started = time.perf_counter()
                try:
                    await unit(direction)
                except Exception as error:  # noqa: BLE001 - counted and reported
                    errors.append(f"{type(error).__name__}: {error}"[:300])
                    await asyncio.sleep(0.01)
                    continue
                ended = time.perf_counter()
                completed += 1
                if "start" in window and not stopping.is_set():
                    latencies.append(ended - started)

        async def clock() -> None:
            await asyncio.sleep(warmup_s)
            window.update(start=time.perf_counter(), proc=time.process_time(),
                          server=_cpu(target.pid), errors=len(errors), busy=system_busy_s())
            await asyncio.sleep(seconds)
            window.update(end=time.perf_counter(), proc_end=time.process_time(),
                          server_end=_cpu(target.pid), busy_end=system_busy_s())
            stopping.set()

        workers = [asyncio.create_task(worker(w)) for w in range(concurrency)]
        await clock()
        await asyncio.wait_for(asyncio.gather(*workers), timeout=60)

    elapsed = window["end"] - window["start"]
    n = len(latencies)
    server_cpu = _cpu_delta(window["server"], window["server_end"], target.pid)

    def per_unit(s: float) -> float:
        return s / n * 1e6 if n else math.nan
    client_cpu = window["proc_end"] - window["proc"]
    # everything else the machine did meanwhile (other processes: noise), in % of one core
    foreign = window["busy_end"] - window["busy"] - client_cpu - server_cpu["total"]
    return {
        "units": n, "seconds": elapsed, "rps": n / elapsed,
        "p50_ms": percentile(latencies, 50) * 1e3, "p99_ms": percentile(latencies, 99) * 1e3,
        "mean_ms": (statistics.fmean(latencies) * 1e3) if latencies else math.nan,
        "errors": len(errors) - window["errors"], "first_error": errors[0] if errors else None,
        "units_total": completed,
        "client_cpu_pct": 100 * client_cpu / elapsed,
        "other_cpu_pct": max(0.0, 100 * foreign / elapsed),
        "server_cpu_pct": 100 * server_cpu["total"] / elapsed,
        "server_cpu_us_per_unit": per_unit(server_cpu["total"]),
        "server_main_thread_us_per_unit": per_unit(server_cpu["main"]),
        "server_other_threads_us_per_unit": per_unit(server_cpu["others"]),
    }


def _cpu(pid: int | None) -> dict[int, float]:
    return thread_cpu_s(pid) if pid else {}


def _cpu_delta(before: dict[int, float], after: dict[int, float],
               pid: int | None) -> dict[str, float]:
    deltas = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    main = deltas.get(pid or -1, 0.0)
    return {"total": sum(deltas.values()), "main": main, "others": sum(deltas.values()) - main}

