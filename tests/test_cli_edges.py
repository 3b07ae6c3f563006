"""The command line's sharp edges: a bad --out, files it did not write, --until before an
outage, help texts, unknown commands and tabs in YAML, and a served run's own folder."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_harness import ROOT, cli, two_users, write


def test_an_impossible_out_exits_2_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for out in (blocker / "results", Path("/proc/qkdsim-results")):
        result = cli(str(ROOT / "scenarios/quickstart.yaml"), "--out", str(out), "--until", "1h")
        assert result.returncode == 2, result.stderr
        assert f"--out {out}: cannot write results there" in result.stderr
        assert "Traceback" not in result.stderr


def test_out_keeps_the_files_it_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "state").mkdir(parents=True)
    mine = out / "state" / "notes.txt"
    mine.write_text("keep me")
    (out / "keep.csv").write_text("mine too")
    stale = out / "state" / "LKM_A.db-wal"
    stale.write_text("a journal of an older run of the same LKM")
    data = two_users(duration="2h", outages=[], expect=[])
    result = cli(str(write(tmp_path, data)), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert mine.read_text() == "keep me" and (out / "keep.csv").read_text() == "mine too"
    assert (out / "state" / "LKM_A.db").is_file()
    assert not stale.exists()  # an older run's journal of this run's own file is not kept


def test_until_before_an_outage_leaves_it_out_with_a_note(tmp_path: Path) -> None:
    result = cli(str(ROOT / "scenarios/quickstart.yaml"), "--until", "1h", "--out",
                 str(tmp_path / "out"))
    assert result.returncode in (0, 1), result.stderr  # run; its expectations judge it
    assert "note: --until 1h: outages.0 (down KM1 at 3d12h) starts after the end of the run " \
           "(1h): left out" in result.stderr
    assert "simulated 3600 s" in result.stdout


def test_a_bad_until_or_seed_is_the_flags_error(tmp_path: Path) -> None:
    for flag, value in (("--until", "soon"), ("--until", "-1h"), ("--seed", "-3")):
        result = cli(str(ROOT / "scenarios/quickstart.yaml"), flag, value, "--out",
                     str(tmp_path / "out"))
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"error: {flag}:") or "argument" in result.stderr, \
            result.stderr
        assert "duration:" not in result.stderr and "invalid scenario" not in result.stderr


def test_validate_and_schema_explain_themselves_and_unknown_commands_are_named() -> None:
    for command, words in (("validate", "Check scenario files"), ("schema", "JSON Schema")):
        result = cli(command, "--help")
        assert result.returncode == 0 and words in result.stdout, result.stdout
    result = cli("help")
    assert result.returncode == 2
    assert "unknown command 'help'" in result.stderr and "validate" in result.stderr


def test_a_tab_in_a_scenario_is_named_as_a_tab(tmp_path: Path) -> None:
    path = tmp_path / "tabbed.yaml"
    path.write_text("name: tabbed\nduration: 1d\nkms:\n\t- {id: KM1}\n")
    result = cli("validate", str(path))
    assert result.returncode == 2
    assert "line 4, column 1: a tab character; YAML indents with spaces" in result.stderr


def test_a_served_run_keeps_its_own_results_folder(tmp_path: Path) -> None:
    """Without --out, a served run writes results/<name>-served, never over results/<name>
    (the last virtual-time run's)."""
    import signal
    import subprocess
    import sys

    import yaml

    from tests.test_serve import free_port

    data = yaml.safe_load((ROOT / "scenarios/qumail_pair.yaml").read_text())
    for lkm in data["lkms"]:
        lkm["port"] = free_port()
    path = write(tmp_path, data)
    virtual = tmp_path / "results" / "qumail_pair"
    virtual.mkdir(parents=True)
    (virtual / "summary.json").write_text("{}")
    process = subprocess.Popen([sys.executable, str(ROOT / "run_scenario.py"), str(path),
                                "--serve"], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("serving"):
            break
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out
    assert (virtual / "summary.json").read_text() == "{}"
    assert (tmp_path / "results" / "qumail_pair-served" / "summary.json").is_file()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_pki_prints_commands_that_run_as_printed(tmp_path: Path) -> None:
    """The server command (the venv's Python, a fresh database) and the curl calls, the
    registrations first, run in a shell exactly as printed."""
    import json
    import signal
    import subprocess
    import time

    from tests.test_serve import free_port

    port = free_port()
    result = cli("pki", "--out", str(tmp_path / "pki"), "--sae", "SAE_ALICE_001", "--sae",
                 "SAE_BOB_001", "--port", str(port))
    assert result.returncode == 0, result.stderr
    commands = [line.strip() for line in result.stdout.splitlines() if line.startswith("  ")]
    serve, *calls = commands
    assert len(calls) == 3 and sys.executable in serve
    server = subprocess.Popen(["bash", "-c", f"exec bash -c {shlex.quote(serve)}"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    try:
        for _ in range(600):
            if server.poll() is not None:
                break
            probe = subprocess.run(["bash", "-c", calls[2]], capture_output=True, text=True)
            if probe.stdout.startswith("{"):
                break
            time.sleep(0.05)
        answers = [json.loads(subprocess.run(["bash", "-c", call], capture_output=True,
                                             text=True, timeout=30).stdout) for call in calls]
    finally:
        os.killpg(server.pid, signal.SIGINT)
        out, _ = server.communicate(timeout=60)
    assert [a.get("keys_generated") for a in answers[:2]] == [100, 100], (answers, out)
    assert answers[2]["stored_key_count"] == 100 and answers[2]["master_SAE_ID"] == "SAE_ALICE_001"


def test_a_node_whose_database_was_sealed_under_another_key_exits_2_without_a_traceback(
        tmp_path: Path) -> None:
    import signal

    from tests.test_serve import Server, free_port

    db = tmp_path / "sealed.db"
    first = Server({"USER_KEY_POOL_DB": str(db), "PORT": str(free_port()),
                    "KEY_AT_REST": "11" * 32})
    assert first.stop(signal.SIGTERM)[0] == 0
    wrong = subprocess.run([sys.executable, "run_scenario.py", "--serve"], cwd=ROOT,
                           env={**os.environ, "USER_KEY_POOL_DB": str(db), "PORT": str(free_port()),
                                "KEY_AT_REST": "22" * 32},
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2, wrong.stdout + wrong.stderr
    assert "Traceback" not in wrong.stderr and "KEY_AT_REST" in wrong.stderr
    assert "22" * 32 not in wrong.stderr + wrong.stdout and "11" * 32 not in wrong.stderr
