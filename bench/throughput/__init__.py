"""The pieces of ``bench/node_throughput.py`` (the entry point, run as a script).

:mod:`.constants` the SAEs, workloads and targets; :mod:`.client` the client and the load
driving; :mod:`.servers` the LKM set-up, the servers and the bare ceiling; :mod:`.rounds` the
measurement rounds, figures, targets and tables; :mod:`.profiling` the cProfile of the LKM;
:mod:`.store_hops` the key-store experiment; :mod:`.run` the command line, ``run_all`` and the
Markdown output.

Imported as the top-level package ``throughput`` with ``bench/`` on ``sys.path`` (the entry
script puts it there, as it does for ``bench/common.py``); nothing here imports ``nodes`` at
import time, so a child process can first put the served tree on ``sys.path``.
"""
