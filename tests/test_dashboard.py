"""The live dashboard of a served network: its control API for every outage kind and for bad
input, its token beyond loopback, a recorded session replaying its injected faults, and the
page itself driven in a real browser (Debian's Chromium, through Playwright)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from nodes.dashboard import Dashboard, LiveView, serve_with_dashboard
from nodes.dashboard.serving import needs_token
from nodes.run import OutageControl, parse_scenario, run

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTEFACTS = ROOT / "results" / "test-artefacts"  # kept by a test run, never committed
NETWORK = {
    "name": "dashboard", "duration": "1d", "seed": 2, "sample_interval": "1s",
    "defaults": {"pool_size": 200},
    "kms": [{"id": "KM1"}, {"id": "KM2"}, {"id": "KM3"}],
    "links": [{"a": "KM1", "b": "KM2", "model": "fixed", "rate_bps": 150000, "warmup": "1h"},
              {"a": "KM2", "b": "KM3", "model": "fixed", "rate_bps": 150000, "warmup": "1h"}],
    "lkms": [{"id": "LKM_A", "km": "KM1"}, {"id": "LKM_B", "km": "KM2"}],
    "saes": [{"id": "SAE_A", "email": "a@example.com", "lkm": "LKM_A"},
             {"id": "SAE_B", "email": "b@example.com", "lkm": "LKM_B"}],
    "traffic": [{"from": "SAE_A", "to": "SAE_B", "mails_per_hour": 1800, "mail_bytes": 1000}],
}
EVERY_KIND = [
    {"kind": "down", "target": "KM3"},
    {"kind": "down", "target": "KM2-KM3"},
    {"kind": "degrade", "target": "KM1-KM2", "fraction": 0.5},
    {"kind": "qber_rise", "target": "KM1-KM2", "qber": 0.08},
    {"kind": "latency", "target": "KM1", "delay": "200ms"},
    {"kind": "latency", "target": "KM2-KM3", "delay": "1s"},
    {"kind": "partition", "groups": [["KM1"], ["KM2", "KM3"]]},
    {"kind": "crash", "target": "LKM_B", "for": "2s"},
]
BAD = [
    (b"not json", "body", 400), (b"[1, 2]", "body", 400),
    (b'{"kind": "meltdown", "target": "KM1"}', "kind", 400),
    (b'{"kind": "down"}', "target", 400),
    (b'{"kind": "down", "target": "KM9"}', "target", 400),
    (b'{"kind": "degrade", "target": "KM1-KM2", "fraction": 7}', "fraction", 400),
    (b'{"kind": "down", "target": "KM1", "at": "1h"}', "at", 400),
    (b'{"kind": "down", "target": "KM1", "for": "soon"}', "for", 400),
]


class Served:
    """A scenario served in-process with its dashboard on a free loopback port."""

    def __init__(self, tmp: Path, data: dict[str, Any], record: Path | None = None) -> None:
        self.tmp, self.data, self.record = tmp, data, record
        self.lines: list[str] = []
        self.stop = asyncio.Event()

    async def __aenter__(self) -> Served:
        self.task = asyncio.ensure_future(serve_with_dashboard(
            parse_scenario(self.data), self.tmp / "out", self.record, self.lines.append, "0",
            self.stop))
        for _ in range(600):
            if any("dashboard:" in line for line in self.lines):
                break
            await asyncio.sleep(0.05)
        line = next(line for line in self.lines if "dashboard:" in line)
        self.url = line.split("dashboard: ")[1].split()[0].rstrip("/")
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()
        self.stop.set()
        self.outcome = await asyncio.wait_for(self.task, 60)

    async def call(self, method: str, path: str, data: bytes | None = None) -> tuple[int, Any]:
        async with self.session.request(method, self.url + path, data=data) as response:
            return response.status, await response.json()

    def outage_edges(self) -> list[tuple[str, str, str]]:
        events = [json.loads(line) for line in
                  (self.tmp / "out" / "events.jsonl").read_text().splitlines()]
        return [(e["node"], e["data"]["outage"], e["data"]["phase"]) for e in events
                if e["kind"] == "outage"]


async def test_every_outage_kind_starts_and_ends_through_the_control_api(tmp_path: Path) -> None:
    async with Served(tmp_path, NETWORK) as served:
        status, targets = await served.call("GET", "/api/targets")
        assert status == 200 and targets["link"] == ["KM1-KM2", "KM2-KM3"]
        ids = []
        for spec in EVERY_KIND:
            status, body = await served.call("POST", "/api/outages", json.dumps(spec).encode())
            assert status == 201, (spec, body)
            ids.append(body["id"])
        status, listed = await served.call("GET", "/api/outages")
        assert {o["id"] for o in listed["active"]} == set(ids)
        for outage_id in ids[:-1]:  # the crash ends by itself, after its `for`
            assert (await served.call("DELETE", f"/api/outages/{outage_id}"))[0] == 200
        for _ in range(100):
            if not (await served.call("GET", "/api/outages"))[1]["active"]:
                break
            await asyncio.sleep(0.1)
        status, body = await served.call("DELETE", f"/api/outages/{ids[0]}")
        assert status == 404 and body["field"] == "id"
        status, state = await served.call("GET", "/api/state?since=0")
        assert state["counts"]["outage"] == 2 * len(EVERY_KIND)
    edges = served.outage_edges()
    for spec in EVERY_KIND:
        node = spec.get("target", "partition")
        assert (node, spec["kind"], "start") in edges and (node, spec["kind"], "end") in edges


async def test_bad_requests_get_a_4xx_naming_the_field_and_start_nothing(tmp_path: Path) -> None:
    async with Served(tmp_path, NETWORK) as served:
        for raw, field, code in BAD:
            status, body = await served.call("POST", "/api/outages", raw)
            assert (status, body["field"]) == (code, field), (raw, body)
            assert body["message"]
        status, body = await served.call("GET", "/api/state?since=-1")
        assert (status, body["field"]) == (400, "since")
        status, body = await served.call("GET", "/api/nothing")
        assert status == 404 and "message" in body
        assert (await served.call("GET", "/api/outages"))[1]["active"] == []
    assert served.outage_edges() == []


async def test_beyond_loopback_the_control_api_needs_the_token(tmp_path: Path) -> None:
    assert needs_token("0.0.0.0") and needs_token("192.0.2.1") and not needs_token("127.0.0.1")
    scenario = parse_scenario(NETWORK)
    dashboard = Dashboard(scenario, LiveView(), OutageControl(None, None, scenario),  # type: ignore[arg-type]
                          token="s3cret-token")
    async with TestClient(TestServer(dashboard.app(), host="127.0.0.1")) as client:
        for path in ("/api/state", "/api/outages", "/"):
            response = await client.get(path)
            assert response.status == 401 and (await response.json())["field"] == "token"
        assert (await client.get("/api/state", headers={"Authorization": "Bearer nope"})
                ).status == 401
        assert (await client.get("/api/state?token=s3cret-token")).status == 200
        assert (await client.get("/api/targets", headers={
            "Authorization": "Bearer s3cret-token"})).status == 200


async def test_a_recorded_session_replays_with_the_same_faults(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    async with Served(tmp_path, NETWORK, record=trace) as served:
        status, body = await served.call("POST", "/api/outages",
                                         b'{"kind": "down", "target": "KM1-KM2"}')
        assert status == 201
        await asyncio.sleep(0.5)
        assert (await served.call("DELETE", f"/api/outages/{body['id']}"))[0] == 200
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    injected = [line for line in lines if line["method"] == "OUTAGE"]
    assert [line["path"].split("/")[1] for line in injected] == ["start", "end"]
    replay = {**NETWORK, "traffic": [{"replay": str(trace)}], "clock": "virtual"}
    replay.pop("sample_interval")
    outcome = await run(parse_scenario(replay), tmp_path / "replayed")
    events = [json.loads(line) for line in
              (tmp_path / "replayed" / "events.jsonl").read_text().splitlines()]
    edges = [(e["t_s"], e["data"]["phase"]) for e in events if e["kind"] == "outage"]
    assert [phase for _, phase in edges] == ["start", "end"]
    recorded = [line["t_s"] for line in injected]
    assert [round(t, 3) for t, _ in edges] == [round(t, 3) for t in recorded]
    assert outcome.exit_code == 0


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: apt-get install "
                    "chromium (.ci/run installs it)")
@pytest.mark.timeout(300)
def test_the_page_shows_the_network_live_and_breaks_it_on_request(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    scenario = tmp_path / "dashboard.yaml"
    scenario.write_text(yaml.safe_dump(NETWORK))
    out = tmp_path / "out"
    server = subprocess.Popen(
        [sys.executable, "run_scenario.py", str(scenario), "--serve", "--dashboard", "0",
         "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=os.environ.copy())
    try:
        assert server.stdout is not None
        lines = []
        for line in server.stdout:
            lines.append(line)
            if "dashboard:" in line:
                break
        url = lines[-1].split("dashboard: ")[1].split()[0]
        lkm_a = next(line.split()[1] for line in lines if line.strip().startswith("LKM_A:"))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                 args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url)
            points = "() => Number(document.getElementById('pools').dataset.points || 0)"
            page.wait_for_function(f"({points})() >= 4", timeout=30_000)
            first = page.evaluate(points)
            page.wait_for_function(f"({points})() > {first}", timeout=30_000)  # it updates
            page.wait_for_selector("#events li.delivery", timeout=30_000)
            page.select_option("#kind", "crash")
            page.select_option("#target", "LKM_A")
            page.click("#start")
            page.wait_for_selector("#timeline-list li[data-target=LKM_A][data-open=true]",
                                   timeout=30_000)
            assert refused(lkm_a)  # the LKM is down while the outage goes on
            assert ("LKM_A", "crash", "start") in edges(out)  # flushed within a second
            page.wait_for_selector("button.end", timeout=30_000)
            page.click("button.end")
            page.wait_for_selector("#timeline-list li[data-target=LKM_A][data-open=false]",
                                   timeout=30_000)
            assert served_again(lkm_a)
            ARTEFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTEFACTS / "dashboard.png"), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.communicate(timeout=60)
    assert ("LKM_A", "crash", "end") in edges(out)


def edges(out: Path) -> list[tuple[str, str, str]]:
    for _ in range(30):
        text = (out / "events.jsonl").read_text()
        found = [(e["node"], e["data"]["outage"], e["data"]["phase"]) for e in
                 map(json.loads, text.splitlines()) if e["kind"] == "outage"]
        if found:
            return found
        time.sleep(0.1)
    return []


def status_of(base: str) -> int | None:
    import urllib.error
    import urllib.request
    request = urllib.request.Request(f"{base}/api/v1/keys/SAE_B/status",
                                     headers={"X-SAE-ID": "SAE_A"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return None


def refused(base: str) -> bool:
    return status_of(base) is None


def served_again(base: str) -> bool:
    for _ in range(100):
        if status_of(base) == 200:
            return True
        time.sleep(0.1)
    return False


def test_every_dashboard_route_is_in_its_openapi_document() -> None:
    from openapi_core import OpenAPI

    document = yaml.safe_load((ROOT / "nodes" / "dashboard" / "openapi.yaml").read_text())
    OpenAPI.from_dict(document)  # a valid OpenAPI 3.1 document
    scenario = parse_scenario(NETWORK)
    app = Dashboard(scenario, LiveView(), OutageControl(None, None, scenario)).app()  # type: ignore[arg-type]
    served = {(route.method.lower(), route.resource.canonical) for route in app.router.routes()
              if route.resource is not None and not route.resource.canonical.startswith("/static")
              and route.method != "HEAD"}
    documented = {(method, path) for path, methods in document["paths"].items()
                  for method in methods}
    assert served == documented


def test_the_page_needs_nothing_from_elsewhere() -> None:
    # the README says the page works offline with no build step: it names no other host
    static = ROOT / "nodes" / "dashboard" / "static"
    for page in static.iterdir():
        text = page.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, page
    assert {p.name for p in static.iterdir()} == {"index.html", "dashboard.js", "dashboard.css"}
