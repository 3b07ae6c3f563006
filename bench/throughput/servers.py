"""The servers: the LKM (``run_scenario.py --serve``) and its set-up, refills and sync counts;
the bare aiohttp ceiling (this benchmark's ``--bare-server`` child); the certificates."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

from common import ServerProcess, free_port

from .client import ENC_PAYLOAD, BadReply, Client, Target
from .constants import ALICE, BOB, POOL_KEYS, SCRIPT, SOURCE

# -- LKM set-up, refills, sync counts -------------------------------------------------------------

async def register(target: Target) -> None:
    async with Client(target) as client:
        for sae in (ALICE, BOB):
            payload = json.dumps({"sae_id": sae, "user_email": f"{sae.lower()}@example.com",
                                  "initial_pool_size": POOL_KEYS}).encode()
            reply = await client.post(ALICE, f"{target.base}/api/v1/keys/register", payload,
                                      ok=201)
            if reply["keys_generated"] != POOL_KEYS:
                raise BadReply(f"registered {sae} with {reply['keys_generated']} keys")


async def refill(target: Target) -> dict[str, int]:
    """Top both pools up to their limit; return the keys available after."""
    out = {}
    async with Client(target) as client:
        for sae in (ALICE, BOB):
            reply = await client.post(ALICE, f"{target.base}/api/v1/keys/{sae}/refill", b"{}")
            out[sae] = reply["available_after"]
    return out


async def sync_total(target: Target) -> int:
    async with Client(target) as client:
        reply = await client.get(ALICE, f"{target.base}/api/v1/keys/km/status")
    return int(reply["sync_stats"]["total"])


async def capture_bodies(target: Target) -> dict[str, str]:
    """The LKM's replies, byte for byte, that the bare server will serve."""
    import aiohttp

    bodies = {}
    async with aiohttp.ClientSession(headers={"X-SAE-ID": ALICE}) as session:
        async with session.get(target.status_url(BOB)) as reply:
            bodies["status"] = await reply.text()
        for size in (256, 8192):
            async with session.post(target.enc_url(BOB, size), data=ENC_PAYLOAD[size],
                                    headers={"Content-Type": "application/json"}) as reply:
                assert reply.status == 200, await reply.text()
                bodies[f"enc_{size}"] = await reply.text()
    return bodies


# -- servers ------------------------------------------------------------------------------------

def start_lkm(name: str, transport: str, work: Path, pki: Path,
              profile_to: Path | None = None, db: str | None = None,
              tree: Path | None = None, kind: str = "lkm") -> tuple[ServerProcess, Target]:
    """An LKM served by ``run_scenario.py --serve`` of the served tree (or ``tree``)."""
    env = {"PORT": str(free_port()), "HOST": "127.0.0.1",
           "USER_KEY_POOL_DB": str(work / f"{db or name}.db"), "MAX_KEYS_PER_REQUEST": "100",
           "USE_HTTPS": "false"}
    if transport == "mtls":
        env.update(USE_HTTPS="true", CA_FILE=str(pki / "ca.crt"), KME_CERT=str(pki / "kme.crt"),
                   KME_KEY=str(pki / "kme.key"))
    argv = [sys.executable]
    if profile_to is not None:
        argv += ["-m", "cProfile", "-o", str(profile_to)]
    argv += ["run_scenario.py", "--serve"]
    server = ServerProcess(name, argv, env, work / f"{name}.log", ready="serving",
                           cwd=tree or SOURCE["tree"])
    return server, Target(kind, transport, server.url_from_first_line(), pki, server.pid)


def start_bare(name: str, transport: str, work: Path, pki: Path,
               bodies: Path) -> tuple[ServerProcess, Target]:
    argv = [sys.executable, str(SCRIPT), "--bare-server", str(bodies)]
    if transport == "mtls":
        argv += ["--pki", str(pki)]
    server = ServerProcess(name, argv, {}, work / f"{name}.log", ready="serving")
    return server, Target("bare", transport, server.url_from_first_line(), pki, server.pid)


async def bare_server(bodies_path: Path, pki: Path | None) -> None:
    """The ceiling: route, read the request, return a fixed JSON body. Nothing else."""
    from aiohttp import web

    bodies: dict[str, str] = json.loads(bodies_path.read_text())

    async def handler(request: web.Request) -> web.Response:
        if request.body_exists:
            await request.read()
        return web.Response(text=bodies[request.match_info["name"]],
                            content_type="application/json")

    app = web.Application()
    app.add_routes([web.get("/bare/{name}", handler), web.post("/bare/{name}", handler)])
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=10.0)
    await runner.setup()
    ssl_ctx = None
    if pki is not None:
        from nodes.server.pki import server_ssl_context

        ssl_ctx = server_ssl_context(pki / "ca.crt", pki / "kme.crt", pki / "kme.key")
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_ctx)
    await site.start()
    port = runner.addresses[0][1]  # (host, port) of the one socket bound
    scheme = "https" if ssl_ctx else "http"
    print(f"bare aiohttp serving at {scheme}://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def write_pki(work: Path) -> Path:
    pki = work / "pki"
    subprocess.run([sys.executable, "run_scenario.py", "pki", "--out", str(pki),
                    "--sae", ALICE, "--sae", BOB], cwd=SOURCE["tree"], check=True,
                   capture_output=True,
                   timeout=120)
    return pki
