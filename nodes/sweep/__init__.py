"""The sweep room: many runs of a scenario across seeds and parameters, on this machine (a
process pool) or on a Ray cluster, with a tidy table, plots with intervals and a report.

It sits on top of the run room and uses only its surface: a run of a sweep is a run like any
other, carried to a worker as data and brought back as files.

Its public surface is ``__all__``.
"""

from nodes.sweep.driver import SweepOutcome, format_sweep, print_progress, run_sweep
from nodes.sweep.engines import ENGINES, EngineError
from nodes.sweep.outputs import mean_interval
from nodes.sweep.spec import FIGURES, Sweep, SweepError, load_sweep

__all__ = [
    "ENGINES", "EngineError", "FIGURES", "Sweep", "SweepError", "SweepOutcome", "format_sweep", "load_sweep",
    "mean_interval", "print_progress", "run_sweep",
]
