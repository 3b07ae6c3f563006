"""A run's rows on disk: the two files a streaming recorder writes as it goes, and reading them
back line by line, so that no reader needs the whole file, or every event, in memory.

``metrics.csv`` holds the samples (header ``t_s,node,metric,value``), ``events.jsonl`` one
canonical JSON object per event. A run that was killed may have left a torn last line: every
reader here skips it, and :func:`repair` cuts it off the file.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulator.metrics import Event

HOUR_S = 3600.0

CSV_HEADER = ("t_s", "node", "metric", "value")
SAMPLES_FILE = "metrics.csv"
EVENTS_FILE = "events.jsonl"
_TAIL = 1 << 16  # bytes read back from a file's end to find its last whole line


@dataclass(slots=True)
class Tally:
    """Running totals of one kind of event: count and numeric data sums, per node and per
    hour (bin h holds [h, h+1) hours of simulated time)."""

    count: dict[str, int] = field(default_factory=dict)
    sums: dict[tuple[str, str], float] = field(default_factory=dict)  # (node, key) -> sum
    hourly_count: list[int] = field(default_factory=list)
    hourly_sums: dict[str, list[float]] = field(default_factory=dict)

    def add(self, event: Event) -> None:
        node = event.node
        self.count[node] = self.count.get(node, 0) + 1
        hour = int(event.t_s // HOUR_S)
        if hour >= len(self.hourly_count):
            grow = hour + 1 - len(self.hourly_count)
            self.hourly_count.extend([0] * grow)
            for bins in self.hourly_sums.values():
                bins.extend([0.0] * grow)
        self.hourly_count[hour] += 1
        for key, value in event.data:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.sums[(node, key)] = self.sums.get((node, key), 0) + value
                bins = self.hourly_sums.setdefault(key, [0.0] * len(self.hourly_count))
                bins[hour] += value


class Sink:
    """The two files of a streaming recorder, flushed at least every ``every_s`` wall seconds
    (when a row comes; :meth:`flush` covers the quiet stretches).

    The rows of one instant (a time as written, to the microsecond) go to the files in the
    order of their text, once time has moved
    past it (decision 70): what happens at the same simulated time is listed the same way
    whatever order the actors that recorded it ran in, so a run split into regions merges
    into the same bytes. A killed run loses at most the instant it was in."""

    def __init__(self, out_dir: Path, every_s: float) -> None:
        self.csv = (out_dir / SAMPLES_FILE).open("w", encoding="utf-8", newline="")
        self.jsonl = (out_dir / EVENTS_FILE).open("w", encoding="utf-8", newline="")
        self.rows = csv.writer(self.csv, lineterminator="\n")
        self.rows.writerow(CSV_HEADER)
        self.every_s = every_s
        self.flushed = time.monotonic()
        self._instant: str | None = None  # the time of the rows held, as written
        self._samples: list[tuple[str, str, str, str]] = []
        self._events: list[str] = []

    def sample(self, row: tuple[str, str, str, str]) -> None:
        if row[0] != self._instant:  # an instant is a time as written
            self._next_instant(row[0])
        self._samples.append(row)
        self._maybe_flush()

    def event(self, instant: str, line: str) -> None:
        if instant != self._instant:
            self._next_instant(instant)
        self._events.append(line)
        self._maybe_flush()

    def _next_instant(self, instant: str | None) -> None:
        if self._samples:
            self._samples.sort()
            self.rows.writerows(self._samples)
            self._samples.clear()
        if self._events:
            self._events.sort()
            self.jsonl.writelines(self._events)
            self._events.clear()
        self._instant = instant

    def _maybe_flush(self) -> None:
        if time.monotonic() - self.flushed >= self.every_s:
            self.flush(instant_too=False)  # the current instant may still grow

    def flush(self, instant_too: bool = True) -> None:
        """Hand the rows to the files: every finished instant, and with ``instant_too`` the
        current one (a served run's quiet second, a reader's question; a virtual run's rows
        after it, at the same instant, then follow it in their own order)."""
        if instant_too:
            self._next_instant(self._instant)
        for out in (self.csv, self.jsonl):
            out.flush()
        self.flushed = time.monotonic()

    def close(self) -> None:
        self._next_instant(None)
        for out in (self.csv, self.jsonl):
            out.close()


def repair(path: Path) -> int:
    """Cut a torn last line (one without its newline) off the file; return the bytes cut.
    Reads only the file's tail, however long the file is."""
    with path.open("rb+") as handle:
        size = handle.seek(0, 2)
        start = size
        while start > 0:
            start = max(0, start - _TAIL)
            handle.seek(start)
            chunk = handle.read(size - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
        else:
            end = 0
        if end < size:
            handle.truncate(end)
        return size - end


def whole_lines(path: Path) -> Iterator[str]:
    """The file's complete, non-empty lines, one at a time (a torn last line is skipped)."""
    with path.open("r", encoding="utf-8", newline="") as handle:
        for line in handle:
            if line.endswith("\n") and line != "\n":
                yield line


def sample_rows(path: Path) -> Iterator[tuple[float, str, str, float]]:
    """The samples of a ``metrics.csv``, as ``(t_s, node, metric, value)``."""
    for row in csv.reader(whole_lines(path)):
        if tuple(row) != CSV_HEADER:
            yield float(row[0]), row[1], row[2], float(row[3])


def event_dicts(path: Path, kind: str | None = None) -> Iterator[dict[str, object]]:
    """The events of an ``events.jsonl`` (only those of ``kind``, if given), as the dicts
    written. A line is parsed only when it can be of that kind."""
    mark = None if kind is None else f'"kind":{json.dumps(kind)}'
    for line in whole_lines(path):
        if mark is not None and mark not in line:
            continue
        event = json.loads(line)
        if kind is None or event["kind"] == kind:
            yield event
