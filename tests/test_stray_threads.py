"""The suite cannot hang at exit: a thread a test leaves running (an SQLite connection's
worker, say) gets a grace period, then the run exits 3 naming it, instead of waiting forever."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = '''
import threading, time

def test_leaves_a_thread_behind():
    threading.Thread(target=time.sleep, args=(3600,), name="left-behind").start()
'''


def test_a_thread_left_running_fails_the_run_instead_of_hanging_it(tmp_path: Path) -> None:
    (tmp_path / "test_probe.py").write_text(PROBE)
    ran = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest",
                          "-p", "no:cacheprovider", str(tmp_path / "test_probe.py")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 3, ran.stdout + ran.stderr
    assert "1 passed" in ran.stdout and "left-behind" in ran.stderr
