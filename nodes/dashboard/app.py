"""The dashboard's HTTP side: the page, its live stream, and the JSON control API.

Routes (documented in ``openapi.yaml``, served at ``/openapi.yaml``):

- ``GET /``                     the page (with ``/static/*``; no CDN, no build step)
- ``GET /api/state?since=N``    a snapshot (:meth:`LiveView.since`)
- ``GET /api/stream?since=N``   the same as server-sent events, one a second
- ``GET /api/targets``          what may be broken: outage kinds, and KMs, links, LKMs
- ``GET /api/outages``          injected outages still going on, and the timeline
- ``POST /api/outages``         start one now: ``{kind, target, for?, fraction?, qber?,
                                delay?, groups?}`` (a scenario outage without ``at``) -> 201
- ``DELETE /api/outages/{id}``  end one now -> 200 (404 if unknown or ended)

Bad requests get a 4xx JSON body ``{"message", "field"}`` naming the field. The dashboard binds
to loopback unless a host is given; bound anywhere else it requires a token (generated at
start-up and printed), as ``Authorization: Bearer <token>`` or ``?token=`` (the page passes it
on from its own URL).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web

from nodes.dashboard.live import LiveView
from nodes.run import OUTAGES, OutageControl, OutageError, Scenario

STATIC = Path(__file__).with_name("static")
OPENAPI = Path(__file__).with_name("openapi.yaml")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STREAM_EVERY_S = 1.0
MAX_BODY = 16 * 1024


class Dashboard:
    """One served network's dashboard: its live view, its outage control, its routes."""

    def __init__(self, scenario: Scenario, live: LiveView, control: OutageControl,
                 token: str | None = None) -> None:
        self.scenario, self.live, self.control, self.token = scenario, live, control, token

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._auth], client_max_size=MAX_BODY)
        app.add_routes([
            web.get("/", self.index), web.get("/openapi.yaml", self.openapi),
            web.static("/static", STATIC),
            web.get("/api/state", self.state), web.get("/api/stream", self.stream),
            web.get("/api/targets", self.targets), web.get("/api/outages", self.outages),
            web.post("/api/outages", self.start_outage),
            web.delete("/api/outages/{id}", self.end_outage),
        ])
        return app

    # -- the page and the view -------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=OPENAPI.read_bytes(), content_type="application/yaml")

    async def state(self, request: web.Request) -> web.Response:
        return web.json_response(self.live.since(_since(request)))

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        seen = _since(request)
        try:
            while True:
                snapshot = self.live.since(seen)
                seen = snapshot["seq"]
                await response.write(f"data: {json.dumps(snapshot)}\n\n".encode())
                await asyncio.sleep(STREAM_EVERY_S)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    async def targets(self, request: web.Request) -> web.Response:
        s = self.scenario
        kinds: dict[str, list[str | None]] = {}
        for kind, target in OUTAGES:
            kinds.setdefault(kind, []).append(target)
        return web.json_response({
            "scenario": s.name, "kinds": kinds, "KM": [km.id for km in s.kms], "LKM": [lkm.id for lkm in s.lkms],
            "link": [f"{link.a}-{link.b}" for link in s.links]})

    # -- the control API ------------------------------------------------------------------

    async def outages(self, request: web.Request) -> web.Response:
        active = [{"id": i, **injected.spec} for i, injected in self.control.active.items()]
        return web.json_response({"active": active, "timeline": self.live.outages})

    async def start_outage(self, request: web.Request) -> web.Response:
        try:
            spec = json.loads(await request.read() or b"null")
        except (ValueError, UnicodeDecodeError):
            raise Refused("body", "the body must be a JSON object") from None
        if not isinstance(spec, dict):
            raise Refused("body", "the body must be a JSON object")
        try:
            outage_id = self.control.start(spec)
        except OutageError as error:
            field, _, message = str(error).partition(": ")
            raise Refused(field.removeprefix("outage.") or "body", message or str(error)) \
                from None
        return web.json_response({"id": outage_id, "outage": spec}, status=201)

    async def end_outage(self, request: web.Request) -> web.Response:
        outage_id = request.match_info["id"]
        try:
            self.control.end(outage_id)
        except KeyError:
            raise Refused("id", f"no injected outage {outage_id!r} is going on", 404) from None
        return web.json_response({"id": outage_id, "ended": True})

    # -- middlewares ----------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.token is not None:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            given = given.strip() if scheme.lower() == "bearer" else \
                request.query.get("token", "")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                raise Refused("token", "this dashboard needs its token (printed at start-up)",
                              401)
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except Refused as refused:
            return web.json_response({"message": refused.message, "field": refused.field},
                                     status=refused.status)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            return web.json_response({"message": error.reason.lower(), "field": None},
                                     status=error.status)


class Refused(Exception):
    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field, self.message, self.status = field, message, status


def _since(request: web.Request) -> int:
    text = request.query.get("since", "0")
    if not text.isdigit() or len(text) > 18:
        raise Refused("since", "since must be a whole number (the seq a page last saw)")
    return int(text)
