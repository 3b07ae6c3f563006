"""The OpenAPI document (nodes/server/openapi.yaml) is served, agrees with the route table, and describes
what a served node really does: every route's real requests and responses, successes and errors,
are validated against it with openapi-core."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from openapi_core import OpenAPI
from openapi_core.exceptions import OpenAPIError
from openapi_core.testing import MockRequest, MockResponse

from nodes.server import api, observability
from tests.support import API, Node

DOCUMENT = Path(api.__file__).with_name("openapi.yaml")
ALICE, BOB, CAROL = "SAE_ALICE_001", "SAE_BOB_001", "SAE_CAROL_001"
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def spec() -> OpenAPI:
    return OpenAPI.from_file_path(str(DOCUMENT))  # validates the document itself


def document_operations() -> set[tuple[str, str]]:
    paths = yaml.safe_load(DOCUMENT.read_text())["paths"]
    return {(method.upper(), _generic(path)) for path, item in paths.items()
            for method in item if method in METHODS}


def _generic(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


class Checker:
    """Sends real requests to a node and validates each request and response against the
    document; remembers which (method, path template, status) it saw."""

    def __init__(self, node: Node, spec: OpenAPI) -> None:
        self.node = node
        self.spec = spec
        self.seen: set[tuple[str, str, int]] = set()
        self.templates = sorted(yaml.safe_load(DOCUMENT.read_text())["paths"],
                                key=lambda p: p.count("{"))

    async def __call__(self, sae: str | None, method: str, path: str, *, json_body: Any = None,
                       raw: bytes | None = None, params: list[tuple[str, str]] | None = None,
                       valid_request: bool = True) -> tuple[int, Any]:
        data = raw if raw is not None else (None if json_body is None else
                                            json.dumps(json_body).encode())
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if sae is not None:
            headers["X-SAE-ID"] = sae
        async with aiohttp.ClientSession() as session:
            async with session.request(method, self.node.url + path, data=data, params=params,
                                       headers=headers) as response:
                body = await response.read()
                status, content_type = response.status, response.headers["Content-Type"]
        request = MockRequest(self.node.url, method, path, args=params or [], headers=headers,
                              data=data)
        errors = list(self.spec.iter_request_errors(request))
        assert (not errors) == valid_request, (method, path, errors)
        mime = content_type.split(";")[0]
        self.spec.validate_response(request, MockResponse(body, status, content_type=mime))
        self.seen.add((method.upper(), self.template(path), status))
        parsed = json.loads(body) if mime == "application/json" else body
        return status, parsed

    def template(self, path: str) -> str:
        for template in self.templates:
            pattern = re.escape(template).replace(r"\{", "{").replace(r"\}", "}")
            if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", pattern), path):
                return _generic(template)
        raise AssertionError(f"{path} matches no path of the document")


def test_the_document_lists_exactly_the_routes_the_node_serves() -> None:
    served = {(route.method, _generic(route.path))
              for route in api.ROUTES + observability.ROUTES
              if route.method != "HEAD" and not route.path.startswith("/api/v1/user-keys")}
    assert served == document_operations()


async def test_the_node_serves_the_document_byte_for_byte(node: Node, spec: OpenAPI) -> None:
    check = Checker(node, spec)
    status, body = await check(None, "GET", "/openapi.yaml")
    assert status == 200 and body == DOCUMENT.read_bytes()
    assert yaml.safe_load(body)["openapi"].startswith("3.")


async def test_every_route_answers_as_the_document_says(tmp_path: Path, spec: OpenAPI) -> None:
    node = await Node(tmp_path, min_pool_size=10).start()
    try:
        check = Checker(node, spec)
        await _monitoring(check)
        await _seed_routes(check)
        keys = await _etsi_routes(check)
        await _key_reads(check, keys)
        await _errors(check)
    finally:
        await node.close()
    hit = {(method, path) for method, path, status in check.seen if status < 300}
    assert hit == document_operations(), document_operations() - hit
    statuses = {status for _, _, status in check.seen}
    assert statuses >= {200, 201, 400, 401, 404, 413, 503}


async def _monitoring(check: Checker) -> None:
    for path in ("/health", "/api/v1/kme/status", "/openapi.yaml"):
        assert (await check(None, "GET", path))[0] == 200
    for sae, pool in ((ALICE, 20), (BOB, 20), (CAROL, 10)):
        status, body = await check(None, "POST", f"{API}/register", json_body={
            "sae_id": sae, "user_email": f"{sae}@example.com", "initial_pool_size": pool})
        assert status == 201, body
    status, text = await check(None, "GET", "/metrics")
    assert status == 200 and b"qkdsim_pool_available_keys" in text


async def _seed_routes(check: Checker) -> None:
    assert (await check(None, "GET", f"{API}/pools"))[0] == 200
    assert (await check(None, "GET", f"{API}/km/status"))[0] == 200
    assert (await check(None, "POST", f"{API}/km/sync", json_body={}))[0] == 200
    assert (await check(None, "POST", f"{API}/km/sync", json_body={"users": ["nobody"]}))[0] == 404
    status, _ = await check(None, "POST", f"{API}/{BOB}/refill", json_body={"keys_to_add": 1})
    assert status == 200
    assert (await check(None, "POST", f"{API}/nobody/refill"))[0] == 404
    status, body = await check(None, "POST", f"{API}/register", json_body={
        "sae_id": ALICE, "user_email": "again@example.com"})
    assert status == 400 and body["success"] is False


async def _etsi_routes(check: Checker) -> list[str]:
    assert (await check(ALICE, "GET", f"{API}/{BOB}/status"))[0] == 200
    status, body = await check(ALICE, "GET", f"{API}/{BOB}/enc_keys",
                               params=[("number", "2"), ("size", "256")])
    assert status == 200 and len(body["keys"]) == 2
    ids = [k["key_ID"] for k in body["keys"]]
    status, body = await check(ALICE, "POST", f"{API}/{BOB}/enc_keys", json_body={})
    assert status == 200
    ids += [k["key_ID"] for k in body["keys"]]
    status, body = await check(ALICE, "POST", f"{API}/{BOB}/enc_keys", json_body={"number": 3})
    return ids + [k["key_ID"] for k in body["keys"]]


async def _key_reads(check: Checker, ids: list[str]) -> None:
    status, body = await check(BOB, "GET", f"{API}/{ALICE}/dec_keys", params=[("key_ID", ids[0])])
    assert status == 200 and [k["key_ID"] for k in body["keys"]] == ids[:1]
    status, _ = await check(BOB, "POST", f"{API}/{ALICE}/dec_keys",
                            json_body={"key_IDs": [{"key_ID": i} for i in ids[1:3]]})
    assert status == 200
    assert (await check(CAROL, "POST", f"{API}/{ALICE}/dec_keys",
                        json_body={"key_IDs": [{"key_ID": ids[3]}]}))[0] == 401
    assert (await check(BOB, "POST", f"{API}/{ALICE}/dec_keys",
                        json_body={"key_IDs": [{"key_ID": ids[0]}]}))[0] == 400
    status, body = await check(BOB, "POST", f"{API}/mark_consumed", json_body={"key_ID": ids[0]})
    assert status == 404 and body["message"] == "Key not found or already consumed"
    status, body = await check(BOB, "POST", f"{API}/mark_consumed", json_body={"key_ID": ids[4]})
    assert status == 200 and body["message"] == "Key consumed"
    status, _ = await check(BOB, "POST", f"{API}/mark_consumed", json_body={"key_id": "qk_x"})
    assert status == 404
    assert (await check(None, "DELETE", f"{API}/{CAROL}"))[0] == 200


async def _errors(check: Checker) -> None:
    assert (await check(ALICE, "GET", f"{API}/nobody/status"))[0] == 404
    assert (await check(None, "GET", f"{API}/{BOB}/status"))[0] == 401
    assert (await check("nobody", "POST", f"{API}/{BOB}/enc_keys"))[0] == 401
    assert (await check(BOB, "POST", f"{API}/{ALICE}/enc_keys", json_body={"number": 21}))[0] == 503
    for body in ({"number": 0}, {"number": "3"}, {"size": 257}, {"size": 16384},
                 {"additional_slave_SAE_IDs": ["x"]}):
        status, _ = await check(ALICE, "POST", f"{API}/{BOB}/enc_keys", json_body=body,
                                valid_request=False)
        assert status == 400, body
    assert (await check(ALICE, "GET", f"{API}/{BOB}/enc_keys", params=[("number", "abc")],
                        valid_request=False))[0] == 400
    assert (await check(BOB, "GET", f"{API}/{ALICE}/dec_keys", valid_request=False))[0] == 400
    assert (await check(BOB, "POST", f"{API}/{ALICE}/dec_keys", json_body={"key_IDs": []},
                        valid_request=False))[0] == 400
    assert (await check(None, "POST", f"{API}/register", raw=b"{not json",
                        valid_request=False))[0] == 400
    big = {"sae_id": "x", "user_email": "x@example.com", "display_name": "x" * 70_000}
    assert (await check(None, "POST", f"{API}/register", json_body=big))[0] == 413


async def test_an_undocumented_method_is_405_with_an_allow_header(node: Node) -> None:
    for method, path, allowed in (("PUT", "/health", {"GET", "HEAD"}),
                                  ("DELETE", f"{API}/x/status", {"GET", "HEAD"}),
                                  ("PATCH", f"{API}/x/enc_keys", {"GET", "HEAD", "POST"})):
        async with aiohttp.ClientSession() as session:
            async with session.request(method, node.url + path) as response:
                assert response.status == 405
                assert "message" in await response.json()
                assert set(response.headers["Allow"].split(",")) == allowed


def test_a_response_that_breaks_the_document_is_caught(spec: OpenAPI) -> None:
    # The validator is not vacuous: a Status without stored_key_count fails, and so does a
    # key that is not base64.
    request = MockRequest("http://127.0.0.1", "get", f"{API}/{BOB}/status")
    status = {"source_KME_ID": "1", "target_KME_ID": "1", "master_SAE_ID": ALICE,
              "slave_SAE_ID": BOB, "key_size": 8192, "max_key_count": 10,
              "max_key_per_request": 100, "max_key_size": 8192, "min_key_size": 64,
              "max_SAE_ID_count": 0, "status_extension": {
                  "sae_id": BOB, "total_keys": 10, "used_keys": 9, "available_keys": 1,
                  "available_bits": 8192, "pool_size_limit": 10, "low_threshold": 1,
                  "is_low": False, "last_sync": None, "next_sync": None, "key_size_bits": 8192}}
    with pytest.raises(OpenAPIError):
        spec.validate_response(request, MockResponse(json.dumps(status).encode()))
    spec.validate_response(request, MockResponse(json.dumps({**status,
                                                             "stored_key_count": 1}).encode()))
    request = MockRequest("http://127.0.0.1", "post", f"{API}/{BOB}/enc_keys", data=b"{}")
    with pytest.raises(OpenAPIError):
        spec.validate_response(request, MockResponse(
            json.dumps({"keys": [{"key_ID": "k", "key": "not base64!"}]}).encode()))
