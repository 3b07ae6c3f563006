"""The HTTP surface of an LKM: ETSI GS QKD 014, the seed's routes, QuMail's extra calls.

Routes are data (:func:`key_routes`); handlers only turn a request into a message for the LKM
actor and its reply into JSON. One middleware renders every error, ours or aiohttp's, as an ETSI
Error body ``{"message", "details"}`` (seed routes add ``"success": false``), so no request ever
gets a 500 or a traceback.

Identity: under TLS the caller is the CN of its client certificate (an ``X-SAE-ID`` header that
disagrees is refused); without TLS, the ``X-SAE-ID`` header (the seed's mode).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web

from nodes.keynode import (
    RESERVED_IDS,
    BadRequest,
    DeleteUser,
    GetKeys,
    GetKeysWithIds,
    GetKmStatus,
    GetStatus,
    ListPools,
    MarkConsumed,
    MethodNotAllowed,
    NodeConfig,
    NotFound,
    PayloadTooLarge,
    QKDError,
    Refill,
    Register,
    Sync,
    TooManyRequests,
    Unauthorized,
    sync_view,
)
from nodes.server.access import CONFIG, admit, require_operator
from nodes.server.observability import NodeLog, caller_for_log, route_of
from nodes.server.pki import common_name_from_der
from nodes.server.replies import iso, json_reply, keys_body
from simulator import ActorRef, Clock

log = logging.getLogger("qkdsim.api")

LKM = web.AppKey("lkm", ActorRef)
BODY_TIMEOUT_S = web.AppKey("body_timeout_s", float)
OPENAPI_DOCUMENT = Path(__file__).with_name("openapi.yaml")
CLOCK: web.AppKey[Clock] = web.AppKey("clock", Clock)
PREFIXES = ("/api/v1/keys", "/api/v1/user-keys")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_INT = re.compile(r"[+-]?\d{1,18}")
# a path segment that names a user: not a route word, so DELETE never shadows /pools, /register
_USER = f"(?!(?:{'|'.join(sorted(RESERVED_IDS))})$)[^/]+"


# -- identity, parsing, rendering -----------------------------------------------------------------

def caller_of(request: web.Request) -> str:
    header = request.headers.get("X-SAE-ID")
    ssl_object = request.get_extra_info("ssl_object")
    if ssl_object is not None:
        der = ssl_object.getpeercert(binary_form=True)
        common_name = common_name_from_der(der) if der else None
        if common_name is None:
            raise Unauthorized("a client certificate with a CN is required")
        if header is not None and header != common_name:
            raise Unauthorized("X-SAE-ID does not match the client certificate")
        return common_name
    if not header:
        raise Unauthorized("the X-SAE-ID header is required")
    return header


async def json_object(request: web.Request, allow_empty: bool) -> dict[str, Any]:
    raw = await read_body(request)
    if not raw.strip():
        if allow_empty:
            return {}
        raise BadRequest("a JSON request body is required")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("malformed JSON body") from None
    if not isinstance(data, dict):
        raise BadRequest("the JSON body must be an object")
    return data


async def read_body(request: web.Request) -> bytes:
    """The body, or 408 if it does not arrive within the app's bound: a transport guard against
    half-sent bodies (wall time, like aiohttp's own keep-alive timer; no simulated time)."""
    try:
        async with asyncio.timeout(request.app.get(BODY_TIMEOUT_S, 10.0)):
            return await request.read()
    except TimeoutError:
        raise web.HTTPRequestTimeout() from None


def int_field(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer", **{name: _short(value)})
    return value


def int_query(request: web.Request, name: str) -> int | None:
    if name not in request.query:
        return None
    text = request.query[name]
    if not _INT.fullmatch(text.strip()):
        raise BadRequest(f"{name} must be an integer", **{name: _short(text)})
    return int(text)


def str_list(data: dict[str, Any], name: str, allow_empty: bool = True) -> tuple[str, ...]:
    value = data.get(name)
    if value is None:
        return ()
    if (not isinstance(value, list) or not (value or allow_empty)
            or not all(isinstance(v, str) and v for v in value)):
        raise BadRequest(f"{name} must be a{'' if allow_empty else ' non-empty'} array of "
                         "non-empty strings")
    return tuple(value)


def extensions(data: dict[str, Any], name: str) -> tuple[tuple[str, object], ...]:
    """ETSI: an array of name/value objects; the seed's single object is accepted too."""
    value = data.get(name)
    if value is None:
        return ()
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadRequest(f"{name} must be an array of objects")
    return tuple((str(k), v) for item in items for k, v in item.items())


def _short(value: object, limit: int = 64) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


async def ask(request: web.Request, message: object) -> Any:
    return await request.app[LKM].ask(message)


# -- ETSI 014 handlers ----------------------------------------------------------------------------

async def status(request: web.Request) -> web.Response:
    view = await ask(request, GetStatus(caller_of(request), request.match_info["slave"]))
    pool = _with_iso(request, view["status_extension"], "last_sync", "next_sync")
    view["status_extension"] = pool
    if _seed_shape(request):
        view.update(pool)
    return json_reply(view)


def _seed_shape(request: web.Request) -> bool:
    """Whether the pool's fields also go at the status body's top level, where the seed's
    clients read them (``available_keys``, ``total_keys``, ``used_keys``, ``sae_id``):
    ``STATUS_SHAPE`` seed or etsi, or by default (auto) for a caller named by ``X-SAE-ID``,
    the seed's mode, and not for one named by its client certificate."""
    shape = request.app[CONFIG].status_shape
    if shape == "auto":
        return request.get_extra_info("ssl_object") is None
    return shape == "seed"


async def enc_keys_get(request: web.Request) -> web.Response:
    message = GetKeys(caller_of(request), request.match_info["slave"],
                      number=_default(int_query(request, "number"), 1),
                      size_bits=int_query(request, "size"))
    return json_reply(keys_body(await ask(request, message)))


async def enc_keys_post(request: web.Request) -> web.Response:
    data = await json_object(request, allow_empty=True)
    message = GetKeys(caller_of(request), request.match_info["slave"],
                      number=_default(int_field(data, "number"), 1),
                      size_bits=int_field(data, "size"),
                      additional_slaves=str_list(data, "additional_slave_SAE_IDs", allow_empty=False),
                      extension_mandatory=extensions(data, "extension_mandatory"))
    extensions(data, "extension_optional")  # validated, then ignored (allowed by §6.2)
    return json_reply(keys_body(await ask(request, message)))


async def dec_keys_get(request: web.Request) -> web.Response:
    ids = [part.strip() for value in request.query.getall("key_ID", [])
           for part in value.split(",") if part.strip()]
    return await _dec_keys(request, ids)


async def dec_keys_post(request: web.Request) -> web.Response:
    data = await json_object(request, allow_empty=False)
    items = data.get("key_IDs")
    if not isinstance(items, list) or not all(
            isinstance(i, dict) and isinstance(i.get("key_ID"), str) for i in items):
        raise BadRequest("key_IDs must be an array of objects with a string key_ID")
    return await _dec_keys(request, [i["key_ID"] for i in items])


async def _dec_keys(request: web.Request, ids: list[str]) -> web.Response:
    if not ids or not all(ids):
        raise BadRequest("at least one key_ID is required")
    if len(set(ids)) != len(ids):
        raise BadRequest("a key_ID is repeated")
    message = GetKeysWithIds(caller_of(request), request.match_info["master"], tuple(ids))
    keys = await ask(request, message)
    # QuMail's profile: the other node's copies are erased before the client has its keys
    await asyncio.gather(*getattr(keys, "notices", ()), return_exceptions=True)
    return json_reply(keys_body(keys))


# -- the seed's routes and QuMail's extras ---------------------------------------------------------

async def register(request: web.Request) -> web.Response:
    operator = admit(request, request.app[CONFIG])
    data = await json_object(request, allow_empty=False)
    sae_id, email = data.get("sae_id"), data.get("user_email")
    if not isinstance(sae_id, str) or not isinstance(email, str) or not email:
        raise BadRequest("sae_id and user_email are required strings")
    if not operator:  # an SAE may register itself
        require_operator(request, request.app[CONFIG], owner=sae_id)
    display = data.get("display_name")
    if display is not None and not isinstance(display, str):
        raise BadRequest("display_name must be a string", display_name=_short(display))
    message = Register(sae_id, email, display, int_field(data, "initial_pool_size"))
    reply = await ask(request, message)
    return json_reply(_with_iso(request, reply, "registered_at"), status=201)


async def refill(request: web.Request) -> web.Response:
    require_operator(request, request.app[CONFIG])
    data = await json_object(request, allow_empty=True)
    message = Refill(request.match_info["sae"], int_field(data, "keys_to_add"))
    return json_reply(await ask(request, message))


async def delete_user(request: web.Request) -> web.Response:
    require_operator(request, request.app[CONFIG], owner=request.match_info["sae"])
    return json_reply(await ask(request, DeleteUser(request.match_info["sae"])))


async def pools(request: web.Request) -> web.Response:
    require_operator(request, request.app[CONFIG])
    reply = await ask(request, ListPools())
    reply["pools"] = [_with_iso(request, p, "last_sync", "next_sync") for p in reply["pools"]]
    return json_reply(reply)


async def km_status(request: web.Request) -> web.Response:
    require_operator(request, request.app[CONFIG])
    reply = await ask(request, GetKmStatus())
    reply["pools"]["pools"] = [_with_iso(request, p, "last_sync", "next_sync")
                               for p in reply["pools"]["pools"]]
    return json_reply(_with_iso(request, reply, "last_sync", "next_sync"))


async def km_sync(request: web.Request) -> web.Response:
    require_operator(request, request.app[CONFIG])
    data = await json_object(request, allow_empty=True)
    timestamp_s = request.app[CLOCK].now()
    results = await ask(request, Sync("manual", str_list(data, "users"), wait=True))
    view = sync_view("manual", timestamp_s, results)
    return json_reply(_with_iso(request, view, "timestamp"))


async def mark_consumed(request: web.Request) -> web.Response:
    data = await json_object(request, allow_empty=False)
    key_id = data.get("key_id", data.get("key_ID"))
    if not isinstance(key_id, str) or not key_id:
        raise BadRequest("key_id is required")
    return json_reply(await ask(request, MarkConsumed(caller_of(request), key_id)))


async def health(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG]
    return json_reply({"status": "healthy", "kme_id": cfg.kme_id,
                              "local_km_id": cfg.local_km_id, "user_pool_enabled": True})


async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI_DOCUMENT.read_bytes(), content_type="application/yaml",
                        charset="utf-8")


async def kme_status(request: web.Request) -> web.Response:
    """QuMail's liveness call. Its start-up reads ``stored_key_count`` here, and without it
    probes ``/keys/1/status`` and ``/keys/3/status`` (404s, and ``overall_health`` false): so the
    node-wide ETSI status fields come with it (the keys available in all its pools)."""
    cfg = request.app[CONFIG]
    reply = await ask(request, ListPools())
    return json_reply({
        "KME_ID": cfg.kme_id, "local_km_id": cfg.local_km_id, "status": "ok",
        "users": reply["summary"]["total_users"], "source_KME_ID": cfg.kme_id,
        "key_size": cfg.key_size_bits, "stored_key_count": reply["summary"]["total_available"],
        "max_key_count": cfg.max_pool_size, "max_key_per_request": cfg.max_keys_per_request,
        "max_key_size": cfg.max_key_size_bits, "min_key_size": cfg.min_key_size_bits,
        "max_SAE_ID_count": 0})


SEED_HANDLERS = frozenset({register, refill, delete_user, pools, km_status, km_sync, health})


def key_routes(prefix: str) -> list[web.RouteDef]:
    """One prefix's route table; fixed words come before the ``{SAE}`` patterns."""
    return [
        web.post(f"{prefix}/register", register),
        web.get(f"{prefix}/pools", pools),
        web.get(f"{prefix}/km/status", km_status),
        web.post(f"{prefix}/km/sync", km_sync),
        web.post(f"{prefix}/mark_consumed", mark_consumed),
        web.get(f"{prefix}/{{slave}}/status", status),
        web.get(f"{prefix}/{{slave}}/enc_keys", enc_keys_get),
        web.post(f"{prefix}/{{slave}}/enc_keys", enc_keys_post),
        web.get(f"{prefix}/{{master}}/dec_keys", dec_keys_get),
        web.post(f"{prefix}/{{master}}/dec_keys", dec_keys_post),
        web.post(f"{prefix}/{{sae}}/refill", refill),
        web.delete(f"{prefix}/{{sae:{_USER}}}", delete_user),
    ]


ROUTES = [route for prefix in PREFIXES for route in key_routes(prefix)] + [
    web.get("/health", health),
    web.get("/api/v1/kme/status", kme_status),
    web.get("/openapi.yaml", openapi_document),
]


# -- errors ----------------------------------------------------------------------------------------

@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except QKDError as error:
        return _error_response(request, error)
    except web.HTTPRequestEntityTooLarge:
        return _error_response(request, PayloadTooLarge())
    except web.HTTPMethodNotAllowed as error:
        response = _error_response(request, MethodNotAllowed())
        response.headers["Allow"] = error.headers.get("Allow", "")  # RFC 9110: a 405 names them
        return response
    except web.HTTPNotFound:
        return _error_response(request, NotFound("no such route"))
    except web.HTTPException as error:
        if error.status < 400:
            raise
        wrapped = QKDError(error.reason.lower())
        wrapped.status = error.status
        return _error_response(request, wrapped)
    except Exception:  # noqa: BLE001 - the server's fault: ETSI 503, logged without key material
        NodeLog(log, request.app[CONFIG].local_km_id, caller_for_log(request)).exception(
            "unhandled error", extra={"method": request.method, "route": route_of(request)})
        server_error = QKDError("internal error on the key manager")
        server_error.status = 503
        return _error_response(request, server_error)


def _error_response(request: web.Request, error: QKDError) -> web.Response:
    body = error.body()
    match_info = request.match_info
    if getattr(match_info, "handler", None) in SEED_HANDLERS:
        body = {"success": False, "error": error.message, **body}
    reply = json_reply(body, status=error.status)
    if isinstance(error, TooManyRequests):  # RFC 6585: when to try again, in whole seconds
        reply.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    return reply


def _with_iso(request: web.Request, view: dict[str, Any], *names: str) -> dict[str, Any]:
    """The named times as ISO 8601 UTC: real dates when served in wall-clock time."""
    offset_s = request.app[CLOCK].utc_offset_s
    return {k: (iso(None if v is None else v + offset_s) if k in names else v)
            for k, v in view.items()}


def _default(value: int | None, default: int) -> int:
    return default if value is None else value


def create_app(lkm: ActorRef[Any], config: NodeConfig, clock: Clock,
               body_timeout_s: float = 10.0) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=config.max_body_bytes)
    app[LKM] = lkm
    app[CONFIG] = config
    app[BODY_TIMEOUT_S] = body_timeout_s
    app[CLOCK] = clock
    app.add_routes(ROUTES)
    return app
