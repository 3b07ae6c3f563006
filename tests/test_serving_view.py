"""The operator's view of a served scenario: refusals logged, pools sampled at stop, real UTC
dates, and a Ctrl-C verdict that does not fail expectations the run had no time to meet."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import yaml

from tests.test_record_replay import topology
from tests.test_serve import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_ctrl_c_reports_early_expectations_as_not_evaluated_and_logs_refusals(
        tmp_path: Path) -> None:
    ports = (free_port(), free_port())
    data = topology(ports)
    data["expect"] = ["no_key_reuse", {"min_syncs": {"reason": "scheduled", "count": 3}},
                      {"max_failed_sends": 0}]
    data["sample_interval"] = "1h"
    path = tmp_path / "served.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "run_scenario.py", str(path), "--serve", "--out", str(out)], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "serving" in line:
                break
        request = urllib.request.Request(  # an unknown caller: refused
            f"http://127.0.0.1:{ports[0]}/api/v1/keys/SAE_ALICE_001/enc_keys", method="POST",
            data=b'{"number": 1}', headers={"X-SAE-ID": "SAE_NOBODY",
                                            "Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=10)
        except urllib.error.HTTPError as error:
            assert error.code in (400, 401)
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/api/v1/keys/km/status",
                                    timeout=10) as response:
            status = json.loads(response.read())
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    # wall-clock mode stamps real UTC dates (the run's own clock counts from 0)
    year = int(datetime.now(timezone.utc).strftime("%Y"))
    assert status["next_sync"] and int(status["next_sync"][:4]) >= year
    assert "SKIP  min_syncs: scheduled >= 3: not evaluated: the run was stopped at" in output
    assert "PASS  no_key_reuse" in output and "PASS  max_failed_sends" in output
    assert " INFO qkdsim.access " in output and "SAE_NOBODY" in output  # the refusal, logged
    summary = json.loads((out / "summary.json").read_text())
    verdicts = {e["name"].split(":")[0]: e["passed"] for e in summary["expectations"]}
    assert verdicts == {"no_key_reuse": True, "min_syncs": None, "max_failed_sends": True}
    with (out / "metrics.csv").open() as rows:
        times = [float(row["t_s"]) for row in csv.DictReader(rows) if row["metric"] == "pool_keys"]
    assert max(times) > 0  # sampled at stop, not only at t = 0 (the next would be at 1 h)
