"""Helpers shared by the benchmarks: machine facts, child server processes, percentiles, tables.

Only the standard library, so a benchmark can import this before it has decided what to run.
"""

from __future__ import annotations

import math
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def commit(ref: str | None = None) -> str:
    """The short hash of ``ref``; of HEAD (with ``+dirty`` when the work tree has uncommitted
    changes) when no ref is given."""
    out = subprocess.run(["git", "rev-parse", "--short", ref or "HEAD"], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    short = out.stdout.strip() or "unknown"
    if ref is not None:
        return short
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True, check=False).stdout.strip()
    return f"{short}+dirty" if dirty else short


def dirty_files() -> list[str]:
    """Tracked files with uncommitted changes, and untracked files (``git status --porcelain``)."""
    out = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                         text=True, check=False).stdout
    return [line[3:] for line in out.splitlines() if line.strip()]


def export_tree(ref: str, into: Path) -> Path:
    """The files of commit ``ref`` (``git archive``), without touching the work tree or .git."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", "--format=tar", ref], cwd=ROOT,
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def tree_fingerprint(folders: Sequence[str] = ("nodes", "simulator"),
                     files: Sequence[str] = ("run_scenario.py",), root: Path = ROOT) -> str:
    """A short hash of the code under test as it is on disk now (committed or not), so that a
    result can be tied to the exact sources even when the work tree is being edited."""
    import hashlib

    digest = hashlib.sha256()
    paths = sorted(p for folder in folders for p in (root / folder).rglob("*")
                   if p.is_file() and p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts)
    paths += [root / f for f in files if (root / f).is_file()]
    for path in paths:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def system_busy_s() -> float:
    """CPU seconds spent by the whole machine, all cores, so far (Linux /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return math.nan
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, object]:
    return {"platform": platform.platform(), "system": platform.system(),
            "machine": platform.machine(), "processor": _cpu_model(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "implementation": platform.python_implementation()}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    all_rows = [tuple(head)] + [tuple(r) for r in rows]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths))) for r in all_rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) used so far by each thread of ``pid`` (Linux /proc only)."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out: dict[int, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return out


class ServerProcess:
    """A child server that prints a line containing ``ready`` once it listens.

    Its output goes to a log file (never a pipe that could fill up). :meth:`stop` sends SIGINT
    and waits, then kills; use it in a ``finally``.
    """

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log_path: Path,
                 ready: str = "serving", timeout_s: float = 60.0, cwd: Path = ROOT) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[str] = open(log_path, "w")  # noqa: SIM115 - closed in stop()/kill()
        self.process = subprocess.Popen(list(argv), cwd=cwd, env={**os.environ, **env},
                                        stdout=self._log, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True)
        self.first_line = self._wait_for(ready, timeout_s)

    @property
    def pid(self) -> int:
        return self.process.pid

    def _wait_for(self, marker: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.log_path.read_text().splitlines():
                if marker in line:
                    return line
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"{self.name} did not start (exit {self.process.poll()}):\n"
                           + self.log_path.read_text()[-4000:])

    def url_from_first_line(self) -> str:
        for word in self.first_line.split():
            if word.startswith(("http://", "https://")):
                return word.rstrip("/.,")
        raise RuntimeError(f"{self.name}: no URL in {self.first_line!r}")

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGINT (a clean shutdown: the profilers write their files), then kill if need be."""
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGINT)
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if not self._log.closed:
            self._log.close()


def python() -> str:
    return sys.executable
