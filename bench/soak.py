#!/usr/bin/env python3
"""Soak: a served pair under steady enc/dec load; does the server's memory stay flat?

``scenarios/qumail_pair.yaml`` is served by ``run_scenario.py --serve`` in its own process, on
two free loopback ports, with its results in a temp folder. ``--clients`` workers (this
process, aiohttp over keep-alive) each loop a pair: enc_keys for ``--keys`` 256-bit keys at node
1, then dec_keys of those IDs at node 2, key bytes compared. Every ``--every`` seconds the
server's RSS (``/proc/PID/status`` VmRSS) is read, with the pairs and errors so far. After
``--seconds`` the server is stopped with SIGINT (it writes its report) and its files are sized.

The growth figure is the least-squares slope of RSS against time after ``--warmup`` seconds,
times the measured span after warm-up (so "MB over the run after warm-up"), and the same slope
scaled to 10 minutes. Target: under 5 MB over 10 minutes after the first minute.

    python bench/soak.py [--seconds 660] [--warmup 60] [--clients 8] [--keys 4] [--every 5]

Writes bench/results/soak.json (or ``--out``) and prints the RSS table and the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, commit, free_port, machine, python, table  # noqa: E402

N1 = "25840139-0dd4-49ae-ba1e-b86731601803"
N2 = "c565d5aa-8670-4446-8471-b0e53e315d2a"
API = "/api/v1/keys"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def slope_mb_per_s(points: list[tuple[float, float]]) -> float:
    n = len(points)
    if n < 2:
        return float("nan")
    mean_t = sum(t for t, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (m - mean_m) for t, m in points) / var if var else float("nan")


class Load:
    def __init__(self, urls: tuple[str, str], keys: int) -> None:
        self.urls = urls
        self.keys = keys
        self.pairs = 0
        self.errors = 0
        self.stop = False

    async def worker(self, session) -> None:  # type: ignore[no-untyped-def]
        km1, km2 = self.urls
        while not self.stop:
            try:
                async with session.post(f"{km1}{API}/{N2}/enc_keys", json={
                        "number": self.keys, "size": 256}, headers={"X-SAE-ID": N1}) as r:
                    body = await r.json()
                    if r.status != 200:
                        self.errors += 1
                        await asyncio.sleep(0.05)
                        continue
                ids = [{"key_ID": k["key_ID"]} for k in body["keys"]]
                async with session.post(f"{km2}{API}/{N1}/dec_keys", json={"key_IDs": ids},
                                        headers={"X-SAE-ID": N2}) as r:
                    read = await r.json()
                    same = r.status == 200 and {k["key_ID"]: base64.b64decode(k["key"])
                                                for k in read["keys"]} == {
                        k["key_ID"]: base64.b64decode(k["key"]) for k in body["keys"]}
                if same:
                    self.pairs += 1
                else:
                    self.errors += 1
            except Exception:  # noqa: BLE001 - counted; the soak goes on
                self.errors += 1
                await asyncio.sleep(0.05)


async def soak(args: argparse.Namespace, pid: int, urls: tuple[str, str]) -> list[dict]:
    import aiohttp

    load = Load(urls, args.keys)
    rows: list[dict] = []
    connector = aiohttp.TCPConnector(limit=args.clients * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        workers = [asyncio.ensure_future(load.worker(session)) for _ in range(args.clients)]
        began = time.monotonic()
        while (now := time.monotonic() - began) < args.seconds:
            rows.append({"t_s": round(now, 1), "rss_mb": round(rss_mb(pid), 2),
                         "pairs": load.pairs, "errors": load.errors})
            await asyncio.sleep(args.every)
        rows.append({"t_s": round(time.monotonic() - began, 1), "rss_mb": round(rss_mb(pid), 2),
                     "pairs": load.pairs, "errors": load.errors})
        load.stop = True
        await asyncio.gather(*workers, return_exceptions=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=660.0)
    parser.add_argument("--warmup", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--keys", type=int, default=4, help="keys per pair")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between RSS readings")
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qkdsim-soak-") as tmp:
        data = yaml.safe_load((ROOT / "scenarios/qumail_pair.yaml").read_text())
        ports = [free_port(), free_port()]
        for lkm, port in zip(data["lkms"], ports):
            lkm["port"] = port
        scenario, out_dir = Path(tmp) / "pair.yaml", Path(tmp) / "out"
        scenario.write_text(yaml.safe_dump(data))
        server = subprocess.Popen([python(), "run_scenario.py", str(scenario), "--serve",
                                   "--out", str(out_dir)], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        assert server.stdout is not None
        for line in server.stdout:
            if line.startswith("serving"):
                break
        time.sleep(1.0)
        urls = (f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}")
        try:
            rows = asyncio.run(soak(args, server.pid, urls))
        finally:
            server.send_signal(signal.SIGINT)
            server.communicate(timeout=300)
        files = {name: (out_dir / name).stat().st_size for name in ("events.jsonl", "metrics.csv")
                 if (out_dir / name).is_file()}
    after = [(r["t_s"], r["rss_mb"]) for r in rows if r["t_s"] >= args.warmup]
    slope = slope_mb_per_s(after)
    span_s = after[-1][0] - after[0][0] if len(after) > 1 else 0.0
    last = rows[-1]
    result = {
        "benchmark": "soak", "commit": commit(), "machine": machine(),
        "settings": vars(args) | {"out": str(args.out)},
        "pairs": last["pairs"], "errors": last["errors"],
        "pairs_per_s": round(last["pairs"] / max(last["t_s"], 1e-9), 1),
        "rss_start_mb": rows[0]["rss_mb"], "rss_warm_mb": after[0][1] if after else None,
        "rss_end_mb": last["rss_mb"], "rss_peak_mb": max(r["rss_mb"] for r in rows),
        "slope_mb_per_min": round(slope * 60, 4),
        "growth_after_warmup_mb": round(slope * span_s, 2),
        "growth_per_10_min_mb": round(slope * 600, 2),
        "files_bytes": files, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    step = max(1, len(rows) // 15)
    print(table(("t (s)", "RSS (MB)", "pairs", "errors"),
                [(f"{r['t_s']:.0f}", f"{r['rss_mb']:.1f}", f"{r['pairs']:,}", str(r["errors"]))
                 for r in rows[::step] + ([rows[-1]] if (len(rows) - 1) % step else [])]))
    print(f"\n{result['pairs']:,} pairs at {result['pairs_per_s']:,} pairs/s, "
          f"{result['errors']} errors; RSS {result['rss_start_mb']} -> {result['rss_end_mb']} MB "
          f"(peak {result['rss_peak_mb']})")
    print(f"after {args.warmup:.0f} s of warm-up: {result['slope_mb_per_min']} MB/min, "
          f"{result['growth_after_warmup_mb']} MB over {span_s:.0f} s, "
          f"{result['growth_per_10_min_mb']} MB per 10 min (target < 5)")
    print(f"files: {files}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
