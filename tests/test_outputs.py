"""What a run's output folder says: every node of the network in the summary (the trusted
middle KM of a relay line too), and summary.txt with the audit and the verdicts, as printed.
docs/outputs.md explains every file, metric, event kind and column."""

from __future__ import annotations

import asyncio
import html
import json
import re
import shutil
import subprocess

import pytest

from simulator import Recorder
from tests.test_harness import ROOT, cli


def test_the_summary_lists_the_trusted_km_and_summary_txt_has_the_verdicts(tmp_path) -> None:
    out = tmp_path / "out"
    result = cli(str(ROOT / "scenarios/relay_line.yaml"), "--until", "1d", "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert {"KM1", "KM2", "KM3"} <= set(summary["nodes"])  # KM2 only relays, in the middle
    text = (out / "summary.txt").read_text()
    assert re.search(r"^KM2 ", text, re.M)
    assert "mails sent" in text and "key IDs reused 0" in text
    for expectation in summary["expectations"]:
        assert f"PASS  {expectation['name']}: {expectation['figure']}" in text
    assert text.rstrip().splitlines()[-1] in result.stdout


def test_outputs_doc_names_every_metric_event_kind_and_summary_column() -> None:
    doc = (ROOT / "docs/outputs.md").read_text()
    from nodes.run.expect import PER_REQUEST_KINDS
    from nodes.run.report import KEY_COLUMNS

    kinds = {"sync", "delivery", "consumed", "relay", "relay_failure", "link_state", "failure",
             "receive_failure", "outage", "generate", "ship", "replay", "copies",
             "marked_consumed", *PER_REQUEST_KINDS}
    for name in (*kinds, "pool_keys", "pool_threshold_keys", "link_buffer_bits", *KEY_COLUMNS,
                 "failed_sends", "min_pool_keys", "exposure", "state/", "scenario.yaml"):
        assert f"`{name}`" in doc, name
    emitted = set()
    for path in (ROOT / "nodes").rglob("*.py"):
        emitted |= set(re.findall(r'(?:record|observe)\(\s*"([a-z_]+)"', path.read_text()))
    assert emitted <= kinds, emitted - kinds  # a new kind must be documented
    assert "docs/outputs.md" in (ROOT / "README.md").read_text()


async def test_every_json_answer_ends_with_a_newline(node) -> None:
    """curl prints the next prompt on a line of its own: answers and errors end with "\\n"."""
    await node.register("SAE_ALICE_001")
    await node.register("SAE_BOB_001")
    session = node.session("SAE_ALICE_001")
    for method, path in (("GET", "/health"), ("GET", "/api/v1/keys/SAE_BOB_001/status"),
                         ("POST", "/api/v1/keys/SAE_BOB_001/enc_keys"),
                         ("GET", "/api/v1/keys/nobody/status"), ("PUT", "/health")):
        async with session.request(method, path) as response:
            text = await response.text()
            assert text.endswith("}\n") and json.loads(text), (method, path, text)


def test_the_shipped_replay_example_runs_and_says_how_faithful_it_was(tmp_path) -> None:
    """scenarios/replay_session.yaml replays a recorded session (its trace path resolved from
    the scenario's folder); the run prints and keeps its fidelity."""
    out = tmp_path / "out"
    result = cli(str(ROOT / "scenarios/replay_session.yaml"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    line = "replay: 9 requests replayed, 9 got the recorded status, 0 a different one"
    assert line in result.stdout and line in (out / "summary.txt").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["replay"] == {"requests": 9, "same_status": 9, "different_status": 0}
    assert summary["totals"]["keys_delivered"] == 7 == summary["totals"]["keys_consumed"] + 1


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_each_run_writes_a_self_contained_report_page(tmp_path) -> None:
    out = tmp_path / "out"
    result = cli(str(ROOT / "scenarios/relay_line.yaml"), "--until", "1d", "--out", str(out))
    assert result.returncode == 0, result.stderr
    page = (out / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and "<link" not in page
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert len(plots) == 3 and page.count('src="data:image/png;base64,') == len(plots)
    summary = json.loads((out / "summary.json").read_text())
    for expectation in summary["expectations"]:
        assert html.escape(expectation["figure"]) in page
    assert "relay_line: every expectation held" in page
    assert html.escape((out / "scenario.yaml").read_text()) in page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_report_page_renders_offline_in_a_real_browser(tmp_path) -> None:
    out = tmp_path / "out"
    run = cli(str(ROOT / "scenarios/two_sites.yaml"), "--until", "6h", "--out", str(out))
    assert run.returncode in (0, 1), run.stderr  # cut short, an expectation may fail: shown
    assert CHROMIUM is not None
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    url = (out / "report.html").as_uri()
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True,
                         text=True, timeout=120)
    assert "two_sites: " in dom.stdout and dom.stdout.count("<img") == 3, dom.stderr[-2000:]
    shot = tmp_path / "page.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1280,2000", url],
                   capture_output=True, timeout=120)
    assert shot.stat().st_size > 20_000  # a rendered page, plots included, not a blank one


async def raw_exchange(port: int, request: bytes) -> tuple[int, dict, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await reader.read(65536)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body), data


async def test_requests_aiohttp_refuses_get_etsi_error_bodies_without_an_echo(node) -> None:
    """Refused before the application (an over-long request line or header, a malformed
    line): an ETSI Error body, 414 / 431 / 400, and nothing of the request quoted back."""
    port = node.served.port
    cases = ((b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
             (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n", 431),
             (b"NOT-HTTP \x01\x02\r\n\r\n", 400))
    for request, expected in cases:
        status, body, raw = await raw_exchange(port, request)
        assert status == expected and body["message"] and body["details"], raw[:300]
        assert b"aaaa" not in raw and b"bbbb" not in raw and b"NOT-HTTP" not in raw


def recorder_with_pools(pools: int) -> Recorder:
    recorder = Recorder()
    for i in range(pools):
        pool = f"LKM_{i % 3}/SAE_{i:03d}"
        for hour in range(6):
            recorder.sample(hour * 3600.0, pool, "pool_keys", 1000 - 37 * hour * (i % 5))
    recorder.event(3600.0, "sync", "LKM_0", pool="LKM_0/SAE_000", reason="threshold",
                   outcome="ok")
    recorder.event(7200.0, "sync", "LKM_1", pool="LKM_1/SAE_001", reason="emergency",
                   outcome="unreachable")
    return recorder


def test_sync_markers_stand_apart_from_the_pools_colours_and_failures_on_top() -> None:
    from matplotlib.colors import to_hex

    from nodes.run.report import plot_pool_levels

    figure = plot_pool_levels(recorder_with_pools(4), "t", [])
    ax = figure.axes[0]
    pool_colours = {to_hex(line.get_color()) for line in ax.lines if line.get_marker() == "None"}
    markers = [line for line in ax.lines if line.get_marker() not in ("None", None, "")]
    assert {to_hex(line.get_markeredgecolor()) for line in markers} == {"#000000", "#ff0000"}
    assert not pool_colours & {"#000000", "#ff0000"}
    failed = next(line for line in markers if to_hex(line.get_markeredgecolor()) == "#ff0000")
    assert failed.get_zorder() > max(line.get_zorder() for line in ax.lines if line is not failed)
    assert "slice" in figure._supxlabel.get_text()  # pools at several LKMs: the caption


def test_many_pools_get_an_overview_and_plots_are_fit_for_a_paper(tmp_path) -> None:
    from matplotlib.image import imread

    from nodes.run.report import write_report

    write_report(recorder_with_pools(30), "many", tmp_path)
    overview = tmp_path / "plots" / "pools_overview.png"
    assert overview.is_file()
    height, width = imread(tmp_path / "plots" / "pool_levels.png").shape[:2]
    assert (width, height) == (11 * 150, int(5.5 * 150))  # 150 dpi
    write_report(recorder_with_pools(5), "few", tmp_path / "few")
    assert not (tmp_path / "few" / "plots" / "pools_overview.png").exists()


def test_the_overview_bands_come_from_an_even_sample_of_very_many_pools(monkeypatch) -> None:
    """A network of a hundred thousand pools must not hold a float per reading for the bands;
    the heatmap and the lowest line still see every pool."""
    from nodes.run import poolplots

    monkeypatch.setattr(poolplots, "MAX_BAND_POOLS", 7)
    figure = poolplots.plot_pools_overview(recorder_with_pools(30), "t", [])
    bands = figure.axes[0]
    assert bands.get_title().endswith("(bands from every 5th)")
    lowest = next(line for line in bands.lines if line.get_label() == "lowest of all pools")
    assert min(lowest.get_ydata()) < 100  # pools outside the sample still count
