"""The plugin ships with the package: pip install the built wheel into a fresh venv, in a
temporary folder with nothing of this repository, and pytest finds ``qkd_network`` there and
runs a client-style test file against it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLIENT_TEST = '''
import httpx

NETWORK = {
    "name": "wheel_check", "duration": "1d",
    "kms": [{"id": "KM1"}], "lkms": [{"id": "LKM_A", "km": "KM1"}],
    "saes": [{"id": "SAE_A", "email": "a@example.com", "lkm": "LKM_A"},
             {"id": "SAE_B", "email": "b@example.com", "lkm": "LKM_A"}],
}


def test_keys_from_a_simulated_network(qkd_network):
    net = qkd_network(NETWORK)
    reply = httpx.post(f"{net.url_of('SAE_A')}/api/v1/keys/SAE_B/enc_keys",
                       headers={"X-SAE-ID": "SAE_A"}, json={"number": 3})
    assert reply.status_code == 200 and len(reply.json()["keys"]) == 3
    outage = net.start_outage("down", "KM1")
    net.end_outage(outage)
    assert net.stop().summary["totals"]["keys_delivered"] == 3
'''


@pytest.mark.timeout(900)
def test_the_plugin_is_found_after_installing_the_wheel_into_a_fresh_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w",
                    str(dist), str(ROOT)], check=True, capture_output=True, timeout=600)
    [wheel] = dist.glob("qkdsim-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-c", str(ROOT / "constraints.txt"),
         str(wheel), "pytest", "httpx"], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    project = tmp_path / "client_project"
    project.mkdir()
    (project / "test_client.py").write_text(textwrap.dedent(CLIENT_TEST))
    fixtures = subprocess.run([str(python), "-m", "pytest", "--fixtures", "-q"], cwd=project,
                              capture_output=True, text=True, timeout=300)
    assert "qkd_network" in fixtures.stdout, fixtures.stdout[-3000:]
    ran = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                         cwd=project, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0 and "1 passed" in ran.stdout, ran.stdout[-3000:] + ran.stderr
