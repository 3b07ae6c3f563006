"""Partitioned runs: one scenario split into regions that run side by side (in this process
or in Ray actors), advanced in conservative windows bounded by the lookahead, their outputs
merged into the same files as a run in one process (decisions 67-70)."""

from nodes.parallel.engine import (
    ENGINES,
    EngineError,
    EngineStats,
    PartitionError,
    RegionFailed,
    run_partitioned,
)

__all__ = ["ENGINES", "EngineError", "EngineStats", "PartitionError", "RegionFailed", "run_partitioned"]
