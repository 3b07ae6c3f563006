#!/usr/bin/env python3
"""Node throughput: requests/s and latency of one served LKM, against a bare aiohttp ceiling.

What runs (all on loopback, every server in its own process, this process is the client):

* the LKM: ``run_scenario.py --serve`` with a fresh SQLite file, once over HTTP and once over
  mutual TLS (certificates from ``run_scenario.py pki``); two SAEs registered with 10,000 keys
  each, their pools refilled before every phase so that no phase runs low (a threshold sync in
  the middle of a phase would be counted and reported);
* the ceiling: a bare aiohttp server (``--bare-server``, its own process) whose handler returns a
  fixed JSON body of exactly the size of the LKM's reply (captured from the LKM at start-up),
  over HTTP and over mutual TLS with the same certificates.

Both are driven by the same client code: aiohttp over keep-alive, ``--concurrency`` workers (1
and 32 by default), each a loop of one unit after the other for ``--seconds`` after a warm-up.
A unit is one request (``status``, ``enc_256``, ``enc_8192``: enc_keys for 1 key of 256 or 8192
bits) or one pair (``pair_8192``: enc_keys by the master, then dec_keys of that key ID by the
slave, key bytes compared). Each figure is the median of ``--repeat`` rounds; rounds interleave
all phases so that a slow moment of the machine does not hit one figure only. Ratios divide the
LKM's units/s by the bare server's requests/s for the same transport, concurrency and body size
(for pairs: the enc_8192 body, one pair against one bare request).

Shared machines: before each phase the script waits (within a budget) until other processes
leave the CPUs alone, and runs a phase again if they took more than ``--noisy`` % of a core
during it; every phase records the CPU of the server (main thread and aiosqlite's thread apart),
of the client and of everything else.

A key-store experiment follows (no HTTP, no actor): the store calls of one enc_keys as the LKM
makes them, against the same SQL in one function with one thread hop.

Then, unless ``--no-profile``, the LKM is run under cProfile (``python -m cProfile -o FILE
run_scenario.py --serve``, stopped with SIGINT) under the enc_8192 load at concurrency 32, over
HTTP and over mutual TLS, and the profile is summarised by category.

``--ref REF`` serves the LKM from a commit (``git archive`` into the temp folder) and ``--tree
DIR`` from a folder, instead of the work tree: a fixed target while others edit ``nodes/``, and
before/after comparisons. ``--markdown FILE`` prints a results file as Markdown.

    python bench/node_throughput.py [--seconds 5] [--repeat 3] [--concurrency 1 32]
                                    [--transport http mtls] [--ref REF | --tree DIR]
                                    [--no-profile | --profile-only]

Writes bench/results/node_throughput.json (or ``--out``; the profiles next to it as
``*_profile_{http,mtls}.pstats/.txt``) and prints the table and the targets met/missed.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ is not an installed package: this script puts bench/ (for common.py and the package
# throughput/, which holds the benchmark) and the project root (for nodes/) on sys.path
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from throughput.run import main

if __name__ == "__main__":
    sys.exit(main(__doc__ or ""))
