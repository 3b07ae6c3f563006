"""End to end: `run_scenario.py --serve` as a real process, the README's curl session, shutdown."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "run_scenario.py", "--serve"], cwd=ROOT, env={**os.environ, **env},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.process.stdout is not None
        seen = []  # at DEBUG, library lines (asyncio's selector) may come first
        while len(seen) < 20 and not (seen and "serving" in seen[-1]):
            seen.append(self.process.stdout.readline())
        self.first_line = seen[-1]
        assert "serving" in self.first_line, "".join(seen) + self.process.stdout.read()

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str]:
        self.process.send_signal(signum)
        out, _ = self.process.communicate(timeout=30)
        return self.process.returncode, out


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[callable]:
    started: list[Server] = []

    def start(**env: str) -> Server:
        server = Server({"USER_KEY_POOL_DB": str(tmp_path / "node.db"), **env})
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(timeout=10)


def readme_curl_session(port: int) -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- curl-session -->", 1)[1].split("<!-- /curl-session -->", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("curl ")]
    return [line.replace("127.0.0.1:8010", f"127.0.0.1:{port}") for line in lines]


def run_curl(command: str) -> dict:
    result = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@needs_curl
def test_the_readme_curl_session_works_as_written(serve) -> None:
    port = free_port()
    server = serve(PORT=str(port))
    commands = readme_curl_session(port)
    assert len(commands) == 8
    health, alice, bob, status, enc, dec, dec_again, pools = (run_curl(c) for c in commands)
    assert health["status"] == "healthy"
    assert alice["keys_generated"] == bob["keys_generated"] == 100
    assert status["stored_key_count"] == 100 and status["master_SAE_ID"] == "SAE_ALICE_001"
    assert [k["key_ID"] for k in enc["keys"]] == ["qk_SAE_BOB_001_000001", "qk_SAE_BOB_001_000002"]
    assert dec["keys"] == enc["keys"]
    assert dec_again["message"] == "one or more keys specified are not found on KME"
    bob_pool = next(p for p in pools["pools"] if p["sae_id"] == "SAE_BOB_001")
    assert bob_pool["available_keys"] == 98
    code, out = server.stop()
    assert code == 0, out
    assert "Traceback" not in out


@needs_curl
def test_keys_delivered_before_a_shutdown_are_readable_once_after_a_restart(serve) -> None:
    port = free_port()
    commands = readme_curl_session(port)
    first = serve(PORT=str(port))
    for command in commands[1:3]:
        run_curl(command)
    enc = run_curl(commands[4])
    assert first.stop(signal.SIGINT)[0] == 0
    second = serve(PORT=str(port))
    assert run_curl(commands[5])["keys"] == enc["keys"]
    assert "not found" in run_curl(commands[6])["message"]
    assert run_curl(commands[3])["stored_key_count"] == 98
    assert second.stop()[0] == 0


def test_an_invalid_environment_variable_exits_2_naming_it(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "run_scenario.py", "--serve"], cwd=ROOT,
                            env={**os.environ, "PORT": "eighty"}, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert "PORT" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("level, answered_logged", [("INFO", False), ("DEBUG", True)])
def test_log_level_decides_whether_answered_requests_are_logged(serve, level, answered_logged):
    port = free_port()
    commands = readme_curl_session(port)
    server = serve(PORT=str(port), LOG_LEVEL=level.lower())
    for command in commands[1:4]:  # register two users, read a status: all answered
        run_curl(command)
    code, out = server.stop()
    access = [line for line in out.splitlines() if "qkdsim.access" in line]
    assert code == 0
    assert bool(access) is answered_logged, out


def test_an_invalid_log_level_exits_2_naming_it() -> None:
    result = subprocess.run([sys.executable, "run_scenario.py", "--serve"], cwd=ROOT,
                            env={**os.environ, "LOG_LEVEL": "loud"}, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert "LOG_LEVEL" in result.stderr and "Traceback" not in result.stderr


def test_usage_without_a_scenario_or_serve_exits_2() -> None:
    result = subprocess.run([sys.executable, "run_scenario.py"], cwd=ROOT, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2


@needs_curl
def test_the_pki_command_prints_a_curl_command_that_works_over_mutual_tls(serve, tmp_path) -> None:
    port = free_port()
    pki = subprocess.run(
        [sys.executable, "run_scenario.py", "pki", "--out", str(tmp_path / "pki"),
         "--sae", "SAE_ALICE_001", "--sae", "SAE_BOB_001", "--port", str(port)],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert pki.returncode == 0, pki.stderr
    serve_line = next(line for line in pki.stdout.splitlines() if "--serve" in line)
    env = dict(re.findall(r"(\w+)=(\S+)", serve_line.split("python")[0]))
    server = serve(**env)
    assert server.first_line.split()[-4].startswith("https://")
    for sae in ("SAE_ALICE_001", "SAE_BOB_001"):
        run_curl(f"curl -s -X POST --cacert {env['CA_FILE']} --cert {tmp_path}/pki/{sae}.crt "
                 f"--key {tmp_path}/pki/{sae}.key https://127.0.0.1:{port}/api/v1/keys/register "
                 f"-d '{{\"sae_id\": \"{sae}\", \"user_email\": \"{sae}@example.com\"}}'")
    curl = next(line.strip() for line in pki.stdout.splitlines()
                if line.strip().startswith("curl") and line.strip().endswith("/status"))
    status = run_curl(curl)
    assert status["master_SAE_ID"] == "SAE_ALICE_001"
    assert status["slave_SAE_ID"] == "SAE_BOB_001"
    assert status["stored_key_count"] == 1000
    assert server.stop()[0] == 0


@needs_curl
def test_the_readme_session_gives_the_same_answers_when_repeated(tmp_path: Path) -> None:
    """The README's server command starts from a fresh database, so the curl session, run a
    second time after it, answers as the first time (key IDs included)."""
    text = (ROOT / "README.md").read_text()
    command = next(line for line in text.splitlines()
                   if line.startswith("rm -f /tmp/qkdsim-demo.db*;"))
    port, db = free_port(), tmp_path / "demo.db"
    command = (command.replace("/tmp/qkdsim-demo.db", str(db))
               .replace("PORT=8010", f"PORT={port}")
               .replace(".venv/bin/python", shlex.quote(sys.executable)))
    answers = []
    for _ in range(2):
        server = subprocess.Popen(["bash", "-c", command], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            assert server.stdout is not None
            for line in server.stdout:
                if "serving" in line:
                    break
            answers.append([run_curl(c) for c in readme_curl_session(port)])
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.communicate(timeout=30)
    def gist(session: list[dict]) -> tuple:
        health, alice, bob, status, enc, dec, dec_again, pools = session
        ids = [[k["key_ID"] for k in reply["keys"]] for reply in (enc, dec)]
        return (health["status"], alice["keys_generated"], bob["keys_generated"],
                status["stored_key_count"], ids, dec_again["message"],
                sorted((p["sae_id"], p["available_keys"]) for p in pools["pools"]))

    first, second = answers
    assert gist(first) == gist(second)
    assert gist(first)[4][0] == ["qk_SAE_BOB_001_000001", "qk_SAE_BOB_001_000002"]
    assert first[4]["keys"] != second[4]["keys"]  # fresh key material each time
