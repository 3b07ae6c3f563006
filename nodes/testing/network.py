"""A scenario served on free loopback ports for as long as a test needs it, in-process.

:class:`QKDNetwork` runs :func:`nodes.run.serve` on its own event loop in a background thread,
so the test (sync or async) talks to real ETSI GS QKD 014 servers over real sockets while the
simulated network (KMs, links, relays, syncs, simulated users) runs behind them in wall-clock
time. It waits for readiness (every LKM answers, slices filled), never sleeps for it; it starts
and ends outages now through the same core a scenario's outages use; and stopping it reports
like any served run: the summary, the expectations, and the audit of invariants.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Mapping

import yaml

from nodes.keynode import TlsFiles
from nodes.run import (
    Network,
    OutageControl,
    RunOutcome,
    Scenario,
    load_scenario,
    parse_scenario,
    serve,
)
from nodes.server import write_pki

#: a served scenario's duration unless one is given: the test stops it long before
DEFAULT_DURATION = "365d"
#: the CN of the operator certificate a TLS network makes (docs/architecture.md, decision 56)
OPERATOR = "QKD_TEST_OPERATOR"


class NetworkError(RuntimeError):
    """The network did not come up (or failed while serving); the message says why."""


class QKDNetwork:
    """One served scenario. ``urls`` maps each LKM to its base URL, ``saes`` each SAE to its
    LKM, ``url_of(sae)`` gives an SAE's own LKM."""

    def __init__(self, scenario: str | Path | Mapping[str, Any], out_dir: Path,
                 duration: str | None = None, tls: bool = False,
                 ready_timeout_s: float = 120.0) -> None:
        self.scenario = prepare(scenario, duration, tls)
        self.out_dir = out_dir
        #: under TLS: the CA to trust, each SAE's (certificate, key) and the operator's
        self.ca_cert: Path | None = None
        self.certs: dict[str, tuple[Path, Path]] = {}
        self.operator: tuple[Path, Path] | None = None
        self._tls: dict[str, TlsFiles] = {}
        if tls:
            lkms = [lkm.id for lkm in self.scenario.lkms]
            pki = write_pki(out_dir / "pki", lkms, [*self.saes_of(self.scenario), OPERATOR])
            self.ca_cert = pki.ca_cert
            self.certs = {sae: pki.saes[sae] for sae in self.saes_of(self.scenario)}
            self.operator = pki.saes[OPERATOR]
            self._tls = {lkm: TlsFiles(pki.ca_cert, *pki.nodes[lkm]) for lkm in lkms}
        self.ready_timeout_s = ready_timeout_s
        self.urls: dict[str, str] = {}
        self.saes = {sae.id: sae.lkm for sae in self.scenario.saes}
        self.lines: list[str] = []  # what the served run announced
        self.outcome: RunOutcome | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._control: OutageControl | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"qkd-network-"
                                        f"{self.scenario.name}", daemon=True)

    # -- life ----------------------------------------------------------------------------

    def start(self) -> QKDNetwork:
        self._thread.start()
        deadline = time.monotonic() + self.ready_timeout_s
        while not self._ready.wait(0.05):
            if not self._thread.is_alive():
                raise NetworkError(f"{self.scenario.name} stopped before it served: "
                                   f"{self._why()}")
            if time.monotonic() >= deadline:
                try:
                    self.stop()
                except NetworkError:
                    pass  # the reason to give is the one below
                raise NetworkError(f"{self.scenario.name} was not ready in time: {self._why()}")
        return self

    def stop(self, timeout_s: float = 120.0) -> RunOutcome:
        """Stop serving and report (idempotent): the summary and verdicts are then in
        ``outcome`` and ``summary``."""
        if self._thread.is_alive() and self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise NetworkError(f"{self.scenario.name} did not stop within {timeout_s:g} s")
        if self.outcome is None:
            raise NetworkError(f"{self.scenario.name} ended without a report: {self._why()}")
        return self.outcome

    @property
    def summary(self) -> dict[str, Any]:
        if self.outcome is None:
            raise NetworkError("the summary exists once the network is stopped (stop())")
        return self.outcome.summary

    def breaches(self) -> list[str]:
        """The invariants the run broke, each with its figure (empty when none)."""
        outcome = self.stop()
        audit = outcome.summary.get("audit") or {}
        problems = [f"{self.scenario.name}: {what}: {audit[key]}" for key, what in (
            ("reused_key_ids", "key IDs delivered more than once"),
            ("mismatched_keys", "keys whose bytes differed between sender and receiver"))
            if audit.get(key)]
        problems += [f"{self.scenario.name}: actor failure: {f}" for f in outcome.actor_failures]
        return problems

    @staticmethod
    def saes_of(scenario: Scenario) -> list[str]:
        return [sae.id for sae in scenario.saes]

    # -- while serving ---------------------------------------------------------------------

    def url_of(self, sae_id: str) -> str:
        """The base URL of the LKM where ``sae_id`` is at home."""
        return self.urls[self.saes[sae_id]]

    def start_outage(self, kind: str, target: str | None = None, **fields: Any) -> str:
        """Start an outage now (``for_`` is the scenario's ``for``); its ID ends it. A bad
        outage raises ValueError naming the field."""
        spec = {"kind": kind, **({"target": target} if target is not None else {}),
                **{name.rstrip("_"): value for name, value in fields.items()}}
        return str(self._call(lambda control: control.start(spec)))

    def end_outage(self, outage_id: str) -> None:
        self._call(lambda control: control.end(outage_id))

    def _call(self, action: Any) -> Any:
        if self._loop is None or self._control is None or not self._thread.is_alive():
            raise NetworkError("the network is not serving")
        done: Future[Any] = Future()

        def run() -> None:
            try:
                done.set_result(action(self._control))
            except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
                done.set_exception(error)

        self._loop.call_soon_threadsafe(run)
        return done.result(timeout=30)

    # -- the thread -------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # noqa: BLE001 - reported by start() and stop()
            self._error = error

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()

        def ready(network: Network, control: OutageControl) -> None:
            self.urls = {lkm_id: node.url for lkm_id, node in network.nodes.items()}
            self._control = control
            self._ready.set()

        self.outcome = await serve(self.scenario, self.out_dir, None, self.lines.append,
                                   self._stop, ready, self._tls)

    def _why(self) -> str:
        if self._error is None:
            return "no error was raised; " + " | ".join(self.lines[-5:])
        return f"{type(self._error).__name__}: {self._error}"


def prepare(scenario: str | Path | Mapping[str, Any], duration: str | None,
            tls: bool = False) -> Scenario:
    """The scenario to serve: its LKMs on free ports (0), served for ``duration``. Under TLS
    the simulated users reach their LKMs directly (only the test's clients need
    certificates), and the plugin's operator certificate is one of the scenario's operators."""
    if isinstance(scenario, Mapping):
        model = parse_scenario(dict(scenario))
    else:
        model = load_scenario(Path(scenario))
    data = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
    for lkm in data.get("lkms", []):
        lkm.pop("port", None)
    data["duration"] = duration or DEFAULT_DURATION
    if tls:
        if any("replay" in flow for flow in data.get("traffic", [])):
            raise NetworkError("a replayed trace goes over plain HTTP: serve it without tls")
        data["transport"] = "direct"
        data["operators"] = [*data.get("operators", []), OPERATOR]
    return parse_scenario(yaml.safe_load(yaml.safe_dump(data)))
