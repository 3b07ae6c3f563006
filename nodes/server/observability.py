"""What an LKM tells its operators: Prometheus metrics at ``GET /metrics``, a log line per request
(refused requests at INFO, answered ones at DEBUG).

:class:`NodeMetrics` owns one :class:`prometheus_client.CollectorRegistry` per LKM (never the
global one: several LKMs live in one process). Three sources feed it, none of them a request
body or key material:

- :meth:`NodeMetrics.middleware`: every request's route template, method, status, failure
  reason and duration (on the node's injected clock: wall seconds when served, 0 in virtual time);
- :meth:`NodeMetrics.observe`, the LKM's observer: keys delivered to masters and to slaves, and
  syncs by reason and outcome;
- :meth:`NodeMetrics.refresh`, on each scrape: pool levels and the KM link, asked of the LKM
  actor (``ListPools``, ``GetKmStatus``).

:class:`NodeLog` binds the node and the caller's SAE ID to every line it writes, in the text
(``key=value``) and as record attributes for structured handlers.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Awaitable, Callable, MutableMapping

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from nodes.keynode import GetKmStatus, ListPools, QKDError
from nodes.server.access import CONFIG, require_operator
from nodes.server.pki import common_name_from_der
from simulator import ActorRef, Clock

ACCESS_LOG = logging.getLogger("qkdsim.access")
METRICS = web.AppKey("metrics", object)
LKM_REF = web.AppKey("metrics_lkm", ActorRef)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_HTTP_REASONS = {404: "no_route", 405: "method_not_allowed", 408: "request_timeout",
                 413: "payload_too_large"}
_PLAIN = re.compile(r"[\w.:/{}@+-]+")
_MAX_SAE_CHARS = 128


# -- logs ----------------------------------------------------------------------------------------

class NodeLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger with ``node`` and ``sae`` (and whatever else is bound) on every line."""

    def __init__(self, logger: logging.Logger, node: str, sae: str | None = None,
                 **bound: object) -> None:
        super().__init__(logger, {"node": node, "sae": sae, **bound})

    def bind(self, **values: object) -> "NodeLog":
        assert self.extra is not None
        merged = {**self.extra, **values}
        return NodeLog(self.logger, **merged)  # type: ignore[arg-type]

    def process(self, msg: Any,
                kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        fields = {**(self.extra or {}), **kwargs.get("extra", {})}
        kwargs["extra"] = fields
        text = " ".join(f"{name}={_field(value)}" for name, value in fields.items())
        return f"{msg} {text}", kwargs


def _field(value: object) -> str:
    """``value`` as one log token: plain if safe, else JSON-quoted (no line breaks injected)."""
    if value is None or isinstance(value, (bool, int, float)):
        return str(value)
    text = str(value)
    return text if _PLAIN.fullmatch(text) else json.dumps(text)


def caller_for_log(request: web.Request) -> str | None:
    """Who is calling, for logs only: the certificate's CN under TLS, else X-SAE-ID. Never
    raises; authentication is the API's job (``nodes.server.api.caller_of``)."""
    ssl_object = request.get_extra_info("ssl_object")
    if ssl_object is not None:
        der = ssl_object.getpeercert(binary_form=True)
        return common_name_from_der(der) if der else None
    header = request.headers.get("X-SAE-ID")
    return header[:_MAX_SAE_CHARS] if header else None


#: the methods a metric label names; any other (a client may send any token) is "OTHER", so
#: the label sets stay bounded whatever arrives
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_of(request: web.Request) -> str:
    return request.method if request.method in METHODS else "OTHER"


def route_of(request: web.Request) -> str:
    """The route template (``/api/v1/keys/{slave}/status``), never the raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "<unmatched>"


# -- metrics -------------------------------------------------------------------------------------

class NodeMetrics:
    """One LKM's metrics, in its own registry."""

    def __init__(self, node: str, clock: Clock) -> None:
        self.node = node
        self.clock = clock
        self.registry = CollectorRegistry()
        self.log = NodeLog(ACCESS_LOG, node)
        self._define(self.registry)
        # labelled children per (route, method, status): labels() costs a lock and a lookup
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _define(self, registry: CollectorRegistry) -> None:
        def pool_gauge(name: str, what: str) -> Gauge:
            return Gauge(name, what, ["node", "sae"], registry=registry)

        self.requests = Counter("qkdsim_requests", "HTTP requests by route, method and status",
                                ["node", "route", "method", "status"], registry=registry)
        self.failures = Counter("qkdsim_request_failures",
                                "Requests answered with an error, by reason",
                                ["node", "route", "reason"], registry=registry)
        self.latency = Histogram("qkdsim_request_duration_seconds",
                                 "Request handling time on the node's clock",
                                 ["node", "route"], buckets=LATENCY_BUCKETS_S, registry=registry)
        self.keys = Counter("qkdsim_keys_delivered",
                            "Keys handed out: to masters (enc_keys) and to slaves (dec_keys)",
                            ["node", "role"], registry=registry)
        self.syncs = Counter("qkdsim_syncs", "Pool syncs by reason and outcome",
                             ["node", "reason", "outcome"], registry=registry)
        self.sync_keys = Counter("qkdsim_sync_keys_received", "Keys received by syncs",
                                 ["node", "reason"], registry=registry)
        self.available_keys = pool_gauge("qkdsim_pool_available_keys",
                                         "Whole default-size keys available in the pool")
        self.available_bits = pool_gauge("qkdsim_pool_available_bits",
                                         "Key material available in the pool, bits")
        self.used_keys = pool_gauge("qkdsim_pool_used_keys", "Keys taken from the pool")
        self.limit_keys = pool_gauge("qkdsim_pool_limit_keys", "The pool's size limit, keys")
        self.pools = Gauge("qkdsim_pools", "Registered users' pools", ["node"], registry=registry)
        self.km_up = Gauge("qkdsim_km_available", "1 if the key manager answered the last sync",
                           ["node"], registry=registry)

    # -- the LKM's observer ------------------------------------------------------------------

    def observe(self, kind: str, node: str, **data: Any) -> None:
        if kind == "delivery":
            self.keys.labels(self.node, "master").inc(data.get("keys", 0))
        elif kind == "consumed":
            self.keys.labels(self.node, "slave").inc(data.get("keys", 0))
        elif kind == "sync":
            reason = str(data.get("reason"))
            self.syncs.labels(self.node, reason, str(data.get("outcome"))).inc()
            self.sync_keys.labels(self.node, reason).inc(data.get("keys_received", 0))

    # -- requests ----------------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Inside the error middleware, so it sees the error class (the failure reason)."""
        start_s = self.clock.now()
        status: int | None = None
        reason: str | None = None
        try:
            response = await handler(request)
            status = response.status
            return response
        except QKDError as error:
            status, reason = error.status, _snake(type(error).__name__)
            raise
        except web.HTTPException as error:
            status, reason = error.status, _HTTP_REASONS.get(error.status, f"http_{error.status}")
            raise
        except Exception:
            status, reason = 503, "internal_error"
            raise
        finally:
            self._record(request, status, reason, self.clock.now() - start_s)

    def _record(self, request: web.Request, status: int | None, reason: str | None,
                duration_s: float) -> None:
        if status is None:  # cancelled: the client went away, nothing was answered
            return
        route, method = route_of(request), method_of(request)
        children = self._children.get((route, method, status))
        if children is None:
            children = self._children[route, method, status] = (
                self.requests.labels(self.node, route, method, str(status)),
                self.latency.labels(self.node, route))
        children[0].inc()
        children[1].observe(max(duration_s, 0.0))
        if status >= 400:
            reason = reason or f"http_{status}"
            self.failures.labels(self.node, route, reason).inc()
        # an answered request is DEBUG: formatting and writing a line per request cost about a
        # tenth of a busy node's time (docs/performance.md); a refusal is worth an INFO line
        level = logging.INFO if status >= 400 else logging.DEBUG
        if not self.log.isEnabledFor(level):
            return
        fields: dict[str, object] = {"method": method, "route": route, "status": status,
                                     "duration_s": round(duration_s, 6)}
        if reason is not None:
            fields["reason"] = reason
        self.log.bind(sae=caller_for_log(request)).log(level, "request", extra=fields)

    # -- scrapes -----------------------------------------------------------------------------

    async def refresh(self, lkm: ActorRef[Any]) -> None:
        """Read pool levels and the KM link from the LKM (no await between clear and set)."""
        pools = await lkm.ask(ListPools())
        km = await lkm.ask(GetKmStatus())
        for gauge in (self.available_keys, self.available_bits, self.used_keys, self.limit_keys):
            gauge.clear()
        for pool in pools["pools"]:
            sae = pool["sae_id"]
            self.available_keys.labels(self.node, sae).set(pool["available_keys"])
            self.available_bits.labels(self.node, sae).set(pool["available_bits"])
            self.used_keys.labels(self.node, sae).set(pool["used_keys"])
            self.limit_keys.labels(self.node, sae).set(pool["pool_size_limit"])
        self.pools.labels(self.node).set(len(pools["pools"]))
        self.km_up.labels(self.node).set(1 if km["next_door_km_available"] else 0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


async def metrics(request: web.Request) -> web.Response:
    require_operator(request, request.app[CONFIG])
    node_metrics: NodeMetrics = request.app[METRICS]  # type: ignore[assignment]
    await node_metrics.refresh(request.app[LKM_REF])
    return web.Response(body=node_metrics.exposition(),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


ROUTES = [web.get("/metrics", metrics)]


def install(app: web.Application, lkm: ActorRef[Any], node_metrics: NodeMetrics) -> None:
    """Add ``/metrics`` and the request middleware (innermost) to an LKM's application."""
    app[METRICS] = node_metrics
    app[LKM_REF] = lkm
    app.middlewares.append(node_metrics.middleware)
    app.add_routes(ROUTES)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])|(?<=[a-z])(?=\d)", "_", name).lower()


def tee(*observers: Callable[..., None]) -> Callable[..., None]:
    """One LKM observer that calls each of ``observers`` in turn."""
    def observe(kind: str, node: str, **data: Any) -> None:
        for observer in observers:
            observer(kind, node, **data)
    return observe
