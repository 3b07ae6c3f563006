"""Record external requests to a served network, and replay them in virtual time.

``run_scenario.py SCENARIO --serve --record trace.jsonl`` writes one JSON line per request that
did not come from a simulated SAE: its time on the run's clock, the LKM, method, path and query,
caller, JSON body and the status it got. Request bodies carry no key material (ETSI requests
name keys by ID only); any ``key`` field is dropped all the same. A scenario with
``traffic: [{replay: trace.jsonl}]`` sends the same requests, at the same times, to the same LKMs
of the same topology, in virtual time, and records each as a ``replay`` event beside the status
it got when recorded.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Awaitable, Callable

import aiohttp
from aiohttp import web

from nodes.server import caller_for_log
from simulator import Actor, Clock

SIMULATED_HEADER = "X-QKDSIM-Simulated"  # set by simulated SAEs: not recorded
#: a trace line that is an outage injected while serving (``path`` "/start/<id>" or
#: "/end/<id>", ``body`` the outage), not a request: a replay injects it again at its time
OUTAGE_METHOD = "OUTAGE"
Injector = Callable[[str, str, Any], None]  # (phase, the recorded outage's id, the outage)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class TraceEntry:
    t_s: float
    lkm: str
    method: str
    path: str
    caller: str | None
    body: Any
    status: int


class TraceWriter:
    def __init__(self, path: Path) -> None:
        self._file: IO[str] = path.open("w", encoding="utf-8")

    def write(self, entry: TraceEntry) -> None:
        self._file.write(json.dumps(_as_dict(entry), sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _as_dict(entry: TraceEntry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in entry.__dataclass_fields__}


def without_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_keys(v) for k, v in value.items() if k != "key"}
    if isinstance(value, list):
        return [without_keys(v) for v in value]
    return value


def recorder_hook(lkm_id: str, clock: Clock,
                  writer: TraceWriter) -> Callable[[web.Application], None]:
    """An app hook that puts the recording middleware outermost (it sees rendered errors)."""

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.headers.get(SIMULATED_HEADER):
            return await handler(request)
        t_s = clock.now()
        raw = await request.read() if request.can_read_body else b""
        response = await handler(request)
        try:
            body = without_keys(json.loads(raw)) if raw.strip() else None
        except ValueError:
            body = {"unparsed_bytes": len(raw)}
        writer.write(TraceEntry(t_s, lkm_id, request.method, request.path_qs,
                                caller_for_log(request), body, response.status))
        return response

    def hook(app: web.Application) -> None:
        app.middlewares.insert(0, record)

    return hook


def load_trace(path: Path) -> list[TraceEntry]:
    """The trace's entries in time order. A last line without its newline that does not parse
    (a recording killed mid-write) is left out; any other bad line is an error."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    entries = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                entries.append(TraceEntry(**json.loads(line)))
            except (ValueError, TypeError) as error:
                if number == len(lines) and not text.endswith("\n"):
                    break  # torn by a kill: what came before it stands
                raise ValueError(f"{path}:{number}: not a trace line ({error})") from None
    return sorted(entries, key=lambda e: e.t_s)


@dataclass(frozen=True, slots=True)
class Replay:
    index: int


class Replayer(Actor):
    """Sends a trace's requests at their recorded times (one at a time, in order)."""

    def __init__(self, entries: list[TraceEntry], urls: dict[str, str],
                 session: aiohttp.ClientSession, clock: Clock,
                 record: Callable[..., None], inject: Injector | None = None) -> None:
        super().__init__("replayer")
        self.inject = inject
        self.entries = entries
        self.urls = urls
        self.session = session
        self.clock = clock
        self.record = record
        self._scheduled = False

    async def on_start(self) -> None:
        """Schedule every request of the trace at its recorded time (once: a restart keeps
        the timers already set)."""
        if self._scheduled:
            return
        self._scheduled = True
        for index, entry in enumerate(self.entries):
            self.clock.call_later(max(entry.t_s - self.clock.now(), 0.0),
                                  functools.partial(self.ref.tell, Replay(index)))

    async def receive(self, message: object) -> None:
        assert isinstance(message, Replay)
        entry = self.entries[message.index]
        if entry.method == OUTAGE_METHOD:
            if self.inject is not None:
                _, phase, outage_id = entry.path.split("/", 2)
                self.inject(phase, outage_id, entry.body)
            return
        headers = {SIMULATED_HEADER: "replay"}
        if entry.caller is not None:
            headers["X-SAE-ID"] = entry.caller
        kwargs: dict[str, Any] = {"headers": headers}
        if entry.body is not None:
            kwargs["json"] = entry.body
        async with self.session.request(entry.method, self.urls[entry.lkm] + entry.path,
                                        **kwargs) as response:
            await response.read()
            status = response.status
        self.record("replay", entry.lkm, index=message.index, method=entry.method,
                    path=entry.path.split("?")[0], status=status, recorded_status=entry.status,
                    differs=int(status != entry.status))
