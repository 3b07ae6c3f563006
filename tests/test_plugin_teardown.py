"""The plugin's networks come and go cleanly: twenty in a row, each on free ports, leave no
listening socket, thread or open file behind."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from nodes.testing import QKDNetwork

NETWORK = {
    "name": "teardown", "duration": "1d",
    "kms": [{"id": "KM1"}], "lkms": [{"id": "LKM_A", "km": "KM1"}, {"id": "LKM_B", "km": "KM1"}],
    "saes": [{"id": "SAE_A", "email": "a@example.com", "lkm": "LKM_A"},
             {"id": "SAE_B", "email": "b@example.com", "lkm": "LKM_B"}],
}


def listening_ports() -> set[int]:
    """TCP ports in LISTEN state on this machine (/proc/net/tcp and tcp6)."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def os_threads() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/task"))


def open_files() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/fd"))


@pytest.mark.timeout(600)
def test_twenty_networks_in_a_row_leave_nothing_behind(tmp_path: Path) -> None:
    threads, files, tasks = threading.active_count(), open_files(), os_threads()
    used: set[int] = set()
    for index in range(20):
        network = QKDNetwork(NETWORK, tmp_path / f"n{index}").start()
        ports = {int(url.rsplit(":", 1)[1]) for url in network.urls.values()}
        assert len(ports) == 2 and ports <= listening_ports()  # really serving
        used |= ports
        network.stop()
        assert not ports & listening_ports(), index  # closed as soon as it stopped
    assert not used & listening_ports()
    assert threading.active_count() == threads  # every network's thread has ended
    assert os_threads() <= tasks + 1  # aiosqlite's threads too
    assert open_files() <= files + 2  # SQLite files, sockets and logs closed


def test_an_invalid_network_is_named_before_anything_serves(tmp_path: Path) -> None:
    threads = threading.active_count()
    wrong = {**NETWORK, "lkms": [{"id": "LKM_A", "km": "KM1"}, {"id": "LKM_B", "km": "KM9"}]}
    with pytest.raises(Exception, match="KM9"):
        QKDNetwork(wrong, tmp_path / "bad")
    assert threading.active_count() == threads
