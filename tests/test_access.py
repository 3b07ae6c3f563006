"""Who may do what: every route x {operator, owner, another SAE, no identity}, over plain HTTP
(the operator by bearer token) and over mutual TLS (the operator by certificate), with the
status each gets, and nothing changed in the store by a refusal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nodes.keynode import NodeConfig
from nodes.server import admin_notice
from tests.support import API, OPERATOR, Node, served, stored_rows

ALICE, BOB, CAROL = "SAE_ALICE_001", "SAE_BOB_001", "SAE_CAROL_001"
NEW_SELF, NEW_BY_OPERATOR = "SAE_NEW_SELF", "SAE_NEW_OP"
TOKEN = "operator-token-for-tests-only"
ROLES = ("none", "other", "owner", "operator")  # the refusals first, on an untouched store

#: route -> (method, path for a target SAE, body for it, {role: status}); "owner" is the SAE
#: the route names (None where a route names none); 0 marks a role that has no meaning there
ROUTES: dict[str, tuple[str, str, Any, dict[str, int]]] = {
    "register": ("POST", f"{API}/register", "register",
                 {"operator": 201, "owner": 201, "other": 403, "none": 401}),
    "delete": ("DELETE", f"{API}/{{sae}}", None,
               {"operator": 200, "owner": 200, "other": 403, "none": 401}),
    "refill": ("POST", f"{API}/{{sae}}/refill", {"keys_to_add": 5},
               {"operator": 200, "owner": 403, "other": 403, "none": 401}),
    "km_sync": ("POST", f"{API}/km/sync", {}, {"operator": 200, "other": 403, "none": 401}),
    "km_status": ("GET", f"{API}/km/status", None, {"operator": 200, "other": 403, "none": 401}),
    "pools": ("GET", f"{API}/pools", None, {"operator": 200, "other": 403, "none": 401}),
    "user_keys_pools": ("GET", "/api/v1/user-keys/pools", None,
                        {"operator": 200, "other": 403, "none": 401}),
    "metrics": ("GET", "/metrics", None, {"operator": 200, "other": 403, "none": 401}),
    # an SAE's routes: any registered SAE; an operator that is no SAE here is refused by ETSI
    "status": ("GET", f"{API}/{BOB}/status", None, {"operator": 401, "other": 200, "none": 401}),
    "enc_keys": ("POST", f"{API}/{BOB}/enc_keys", {"number": 1},
                 {"operator": 401, "other": 200, "none": 401}),
    # open to anyone who can connect
    "health": ("GET", "/health", None, {"operator": 200, "other": 200, "none": 200}),
    "kme_status": ("GET", "/api/v1/kme/status", None,
                   {"operator": 200, "other": 200, "none": 200}),
}


def target(route: str, role: str) -> str:
    """The SAE a role's request names: the caller itself for the owner, else BOB (CAROL for
    the operator, who comes after the owner may have deleted BOB)."""
    if route == "register":
        return {"owner": NEW_SELF, "operator": NEW_BY_OPERATOR}.get(role, NEW_SELF)
    return CAROL if role == "operator" else BOB


def caller(route: str, role: str) -> str | None:
    """Who calls: None (no identity), ALICE (another SAE), the target, or the operator."""
    return {"none": None, "other": ALICE, "owner": target(route, "owner"),
            "operator": OPERATOR}[role]


async def snapshot(node: Node) -> list[Any]:
    store = node.lkm.store
    return [await stored_rows(store, sql) for sql in (
        "SELECT sae_id, user_email FROM users ORDER BY sae_id",
        "SELECT sae_id, pool_size_limit, available_keys, used_keys FROM key_pools ORDER BY sae_id",
        "SELECT sae_id, status, COUNT(*) FROM quantum_keys GROUP BY sae_id, status "
        "ORDER BY sae_id, status",
        "SELECT COUNT(*) FROM sync_logs")]


async def request(node: Node, route: str, role: str, plain: bool) -> tuple[int, Any]:
    method, path, body, _ = ROUTES[route]
    sae = target(route, role)
    if body == "register":
        body = {"sae_id": sae, "user_email": f"{sae.lower()}@example.com",
                "initial_pool_size": 20}
    who = caller(route, role)
    if plain and who == OPERATOR:  # over plain HTTP an operator shows its token, not a name
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(node.url) as session:
            async with session.request(method, path.format(sae=sae), json=body,
                                       headers=headers) as response:
                text = await response.text()
                is_json = response.content_type == "application/json"
                return response.status, json.loads(text) if is_json else text
    return await node.call(who, method, path.format(sae=sae), json=body)


@pytest.mark.parametrize("plain", [True, False], ids=["plain_http_token", "mutual_tls"])
@pytest.mark.parametrize("route", list(ROUTES))
async def test_every_route_by_role(tmp_path: Path, route: str, plain: bool) -> None:
    saes = (ALICE, BOB, CAROL, NEW_SELF)
    options: dict[str, Any] = {"admin_token": TOKEN} if plain else {"tls": True}
    async with served(tmp_path, saes, **options) as node:
        for sae in (ALICE, BOB, CAROL):
            await node.register(sae, pool=20) if not plain else await register_plain(node, sae)
        expected = ROUTES[route][3]
        for role in ROLES:
            if role not in expected:
                continue
            if role == "none" and not plain:
                with pytest.raises(aiohttp.ClientError):  # no certificate, no handshake
                    await node.call(None, "GET", "/health")
                continue
            before = await snapshot(node)
            status, body = await request(node, route, role, plain)
            assert status == expected[role], (route, role, body)
            if status >= 400:
                assert await snapshot(node) == before, (route, role)
                assert "message" in body, body  # an ETSI Error body
            if route in ("pools", "user_keys_pools") and status == 200:
                emails = {p["user_email"] for p in body["pools"]}
                assert f"{BOB.lower()}@example.com" in emails  # operators see them


async def register_plain(node: Node, sae: str) -> None:
    """Over plain HTTP with an operator configured, an SAE registers itself."""
    status, body = await node.call(sae, "POST", f"{API}/register", json={
        "sae_id": sae, "user_email": f"{sae.lower()}@example.com", "initial_pool_size": 20})
    assert status == 201, body


async def test_a_wrong_or_misplaced_token_is_401_and_changes_nothing(tmp_path: Path) -> None:
    async with served(tmp_path, admin_token=TOKEN) as node:
        await register_plain(node, BOB)
        before = await snapshot(node)
        async with aiohttp.ClientSession(node.url) as session:
            for headers in ({"Authorization": "Bearer not-the-token"},
                            {"Authorization": f"Bearer {TOKEN}x", "X-SAE-ID": BOB},
                            {"Authorization": TOKEN}):  # no scheme: no token, no identity
                async with session.delete(f"{API}/{BOB}", headers=headers) as response:
                    assert response.status == 401, headers
                    body = await response.json()
                    assert TOKEN not in await response.text() and "message" in body
        assert await snapshot(node) == before


async def test_an_x_sae_id_header_never_makes_an_operator(tmp_path: Path) -> None:
    # over plain HTTP the header is a claim: naming an operator's CN grants nothing
    async with served(tmp_path, admin_token=TOKEN, operators=(OPERATOR,)) as node:
        await register_plain(node, BOB)
        status, _ = await node.call(OPERATOR, "POST", f"{API}/{BOB}/refill", json={})
        assert status == 403


async def test_a_loopback_node_without_operators_stays_open_and_says_so(tmp_path: Path) -> None:
    async with served(tmp_path) as node:
        assert node.served is not None and node.served.config.open_admin
        await node.register(BOB)
        status, body = await node.call(None, "GET", f"{API}/pools")  # the seed's behaviour
        assert status == 200 and body["pools"][0]["user_email"] == "sae_bob_001@example.com"
        assert (await node.call(ALICE, "DELETE", f"{API}/{BOB}"))[0] == 200
    assert "OPEN" in admin_notice(NodeConfig())


def test_nothing_is_open_over_tls_or_beyond_loopback() -> None:
    for config in (NodeConfig(host="0.0.0.0"), NodeConfig(host="192.0.2.7"),
                   NodeConfig(host="::"), NodeConfig(admin_token=TOKEN)):
        assert not config.open_admin, config
    assert "closed" in admin_notice(NodeConfig(host="0.0.0.0"))
    notice = admin_notice(NodeConfig(admin_token=TOKEN, operators=(OPERATOR,)))
    assert OPERATOR in notice and TOKEN not in notice
    assert TOKEN not in repr(NodeConfig(admin_token=TOKEN))


def test_the_token_and_operators_come_from_the_environment() -> None:
    config = NodeConfig.from_env({"ADMIN_TOKEN": TOKEN, "ADMIN_SAE_IDS": f"{OPERATOR}, OPS_2"})
    assert config.admin_token == TOKEN and config.operators == (OPERATOR, "OPS_2")
    assert not config.open_admin


async def test_a_served_node_prints_who_may_use_its_admin_routes(tmp_path: Path) -> None:
    import asyncio

    from nodes.server import serve_forever
    lines: list[str] = []
    stop = asyncio.Event()
    config = NodeConfig(port=0, db_path=str(tmp_path / "n.db"), admin_token=TOKEN)
    task = asyncio.ensure_future(serve_forever(config, lines.append, stop))
    for _ in range(200):
        if len(lines) >= 2:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 30)
    assert any("ADMIN_TOKEN" in line and "operators" in line for line in lines), lines
    assert not any(TOKEN in line for line in lines)


def test_the_readme_safe_node_session_works_as_written(tmp_path: Path) -> None:
    import os
    import shlex
    import shutil
    import subprocess

    from tests.test_serve import Server, free_port
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = text.split("<!-- safe-session -->", 1)[1].split("<!-- /safe-session -->", 1)[0]
    port = str(free_port())
    commands = [line.replace("8011", port) for line in block.splitlines()
                if line.startswith("curl ")]
    server = Server({"USER_KEY_POOL_DB": str(tmp_path / "safe.db"), "PORT": port,
                     "ADMIN_TOKEN": TOKEN})
    assert server.process.stdout is not None
    notice = server.process.stdout.readline()  # the line after "serving" (read here: a
    # communicate() with a timeout reads the pipe itself, past what readline() buffered)
    try:
        replies = []
        for command in commands:
            args = shlex.split(command.replace("$ADMIN_TOKEN", TOKEN)) + ["-w", "\n%{http_code}"]
            result = subprocess.run(args, capture_output=True, text=True, timeout=20,
                                    env={**os.environ, "ADMIN_TOKEN": TOKEN})
            body, _, code = result.stdout.rpartition("\n")
            replies.append((int(code), json.loads(body)))
    finally:
        code, out = server.stop()
    assert [status for status, _ in replies] == [201, 403, 403, 200]
    assert replies[3][1]["pools"][0]["user_email"] == "alice@example.com"
    assert "admin routes are for operators" in notice and TOKEN not in notice + out
