"""What every part of the benchmark shares: the served tree, the SAEs, workloads and targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common import ROOT

#: the entry script: the servers and experiments it starts in child processes run it again
SCRIPT = Path(__file__).resolve().parent.parent / "node_throughput.py"
SOURCE: dict[str, Any] = {"tree": ROOT}  # the tree whose run_scenario.py is served: the work
# tree, or --ref's / --tree's (set by run_all; "fingerprint" and "label" then name it)
ALICE, BOB = "SAE_ALICE_001", "SAE_BOB_001"
DIRECTIONS = ((ALICE, BOB), (BOB, ALICE))  # (master, slave): worker w uses DIRECTIONS[w % 2]
POOL_KEYS = 10_000
WORKLOADS = ("status", "enc_256", "enc_8192", "pair_8192")
BARE_BODIES = ("status", "enc_256", "enc_8192")
CEILING_BODY = {"status": "status", "enc_256": "enc_256", "enc_8192": "enc_8192",
                "pair_8192": "enc_8192"}
TARGETS = (  # (workload, metric, threshold): at concurrency 32, for each transport
    ("enc_256", "ratio", 0.50), ("enc_8192", "ratio", 0.50),
    ("enc_256", "p99_ms", 20.0), ("enc_8192", "p99_ms", 20.0),
    ("pair_8192", "ratio", 0.25),
)
TARGET_CONCURRENCY = 32
TRANSPORT_NAMES = {"http": "HTTP", "mtls": "mTLS"}
