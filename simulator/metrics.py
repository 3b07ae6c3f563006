"""The recorder: every number a run produces, as tidy rows, and the CSV/JSONL export.

Metrics are rows (STYLE.md rule 11): a `Sample` is one `(t_s, node, metric, value)` reading, an
`Event` is one thing that happened (a sync, a delivery, a failed send, an outage edge). Plots,
the summary and the expectations read only these rows, so whatever a figure shows can be
checked against the CSV. The names of the kinds, metrics and data keys a run records are a
matter for whoever records them (qkdsim's are listed in ``nodes/run/expect.py``).

Exports are byte-identical for identical inputs: rows keep insertion order but for the rows of
one instant, listed in the order of their text (decision 70); event data is sorted by key,
floats are written as `repr(round(x, 6))`, JSON keys are sorted.

A recorder can stream (:meth:`Recorder.stream_to`): every row goes to its file as it is recorded,
through a buffer flushed at least every second of wall time (`simulator.records`), so a run that
is killed leaves what it recorded up to the last flush. A streaming recorder holds no rows: only
running totals of each kind of event, per node and per hour, which answer counts and sums; the
rest (a series, the events of one kind) is read back from the files when asked for. Kinds that
come with every request (deliveries, reads, failed sends) can be *summarised*
(:meth:`Recorder.summarise`): their totals are all a reader gets, never the events.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

from simulator.records import (
    CSV_HEADER,
    EVENTS_FILE,
    HOUR_S,
    SAMPLES_FILE,
    Sink,
    Tally,
    event_dicts,
    sample_rows,
)


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of a metric at a node at simulated time `t_s`."""

    t_s: float
    node: str
    metric: str
    value: float


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened at `t_s`; `data` is sorted by key so equal events compare equal."""

    t_s: float
    kind: str
    node: str
    data: tuple[tuple[str, object], ...]

    def get(self, key: str, default: object = None) -> object:
        """Return the value of data `key`, or `default` when the event has no such key."""
        for name, value in self.data:
            if name == key:
                return value
        return default

    def as_dict(self) -> dict[str, object]:
        """Return the event as a plain dict (data nested under "data"), as written to JSONL."""
        return {"t_s": self.t_s, "kind": self.kind, "node": self.node, "data": dict(self.data)}


class Recorder:
    """Collects samples and events of one run, in the order they were recorded.

    In memory, samples are kept in flat arrays (time, value, series number: 20 bytes a reading,
    where a `Sample` object and a tuple took about 180), since a large run records millions.

    A streaming recorder (:meth:`stream_to`) keeps no row at all: each goes to its file, and
    memory holds only the running totals of every kind of event (a `Tally`) and each series'
    last time. Questions the totals cannot answer are answered from the files: the samples are
    read back when first asked for, after :meth:`close`, and events of one kind are read from
    ``events.jsonl`` line by line. :meth:`from_files` opens the files of any run the same way.
    """

    def __init__(self) -> None:
        self._t = array("d")
        self._v = array("d")
        self._k = array("I")  # the reading's series, an index into _keys
        self._keys: list[tuple[str, str]] = []
        self._numbers: dict[tuple[str, str], int] = {}  # key -> its index in _keys
        self._series: dict[tuple[str, str], array[int]] = {}  # key -> its readings' positions
        self._events: list[Event] = []
        self._by_kind: dict[str, list[Event]] = {}
        self._tallies: dict[str, Tally] = {}  # every kind, once on file; else summarised ones
        self._summarised: set[str] = set()  # kinds whose events are never handed out
        self._sink: Sink | None = None
        self._files: Path | None = None  # the run's folder, once its rows are on file
        self._last_of: dict[tuple[str, str], float] = {}  # on file: each series' last time
        self._samples_read = False
        self._last_t_s = 0.0
        #: called with each row as it is recorded (a live view): Sample or Event
        self.listeners: list[Callable[[Sample | Event], None]] = []

    @classmethod
    def from_files(cls, out_dir: Path | str, *summarised: str) -> Recorder:
        """A recorder answering from the ``metrics.csv`` and ``events.jsonl`` of a run in
        ``out_dir`` (one pass over the events for their totals; torn last lines skipped)."""
        recorder = cls()
        recorder.summarise(*summarised)
        recorder._files = Path(out_dir)
        for data in event_dicts(recorder._files / EVENTS_FILE):
            event = _event(data["t_s"], str(data["kind"]), str(data["node"]), data["data"])
            recorder._tallied(event.kind).add(event)
            recorder._last_t_s = max(recorder._last_t_s, event.t_s)
        return recorder

    @property
    def samples(self) -> list[Sample]:
        """All samples in insertion order (a copy)."""
        store = self._sample_store()
        keys = store._keys
        return [Sample(t, *keys[k], v) for t, v, k in zip(store._t, store._v, store._k)]

    @property
    def events(self) -> list[Event]:
        """All events in insertion order (a copy; on file, every kind not summarised)."""
        if self._files is None:
            return list(self._events)
        return [e for e in self._read_events() if e.kind not in self._summarised]

    def summarise(self, *kinds: str) -> None:
        """Keep running totals of these kinds, and never hand out their events (once on file,
        they are not held at all). Call before the first event of each."""
        for kind in kinds:
            assert kind not in self._by_kind, f"{kind} events were recorded already"
            self._tallies.setdefault(kind, Tally())
            self._summarised.add(kind)

    def stream_to(self, out_dir: Path | str, flush_every_s: float = 1.0) -> None:
        """Write ``metrics.csv`` and ``events.jsonl`` in ``out_dir`` as rows are recorded, and
        keep none of them (call before the first row); :meth:`close` ends the files."""
        assert not self._t and not self._events and self._sink is None, "stream from the start"
        self._files = Path(out_dir)
        self._sink = Sink(self._files, flush_every_s)

    @property
    def streaming(self) -> bool:
        return self._sink is not None

    def flush(self) -> None:
        """Hand everything recorded so far to the files (a no-op unless streaming)."""
        if self._sink is not None:
            self._sink.flush()

    def close(self) -> None:
        """Flush and close the files of a streaming recorder: it records no more rows, and
        answers from the files."""
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def sample(self, t_s: float, node: str, metric: str, value: float) -> None:
        """Record `metric` of `node` at `t_s`; time must not go backwards within a series."""
        t_s, value = _finite(t_s, "t_s"), _finite(value, "value")
        key = (node, metric)
        if self._sink is not None:
            last = self._last_of.get(key)
            if last is not None and t_s < last:
                raise ValueError(f"sample of {metric} at {node} goes back in time: {t_s} < {last}")
            self._last_of[key] = t_s
            self._last_t_s = max(self._last_t_s, t_s)
            self._sink.sample((format_float(t_s), node, metric, format_float(value)))
            for listener in self.listeners:
                listener(Sample(t_s, node, metric, value))
            return
        assert self._files is None, "this recorder answers from its files"
        self._keep_sample(t_s, node, metric, value)

    def _keep_sample(self, t_s: float, node: str, metric: str, value: float) -> None:
        key = (node, metric)
        number = self._numbers.get(key)
        if number is None:
            number = self._numbers[key] = len(self._keys)
            self._keys.append(key)
            self._series[key] = array("I")
        series = self._series[key]
        if series and t_s < self._t[series[-1]]:
            raise ValueError(
                f"sample of {metric} at {node} goes back in time: {t_s} < {self._t[series[-1]]}"
            )
        series.append(len(self._t))
        self._t.append(t_s)
        self._v.append(value)
        self._k.append(number)
        self._last_t_s = max(self._last_t_s, t_s)

    def event(self, t_s: float, kind: str, node: str, **data: object) -> None:
        """Record an event; data values must be scalars or sequences of scalars (JSON-able)."""
        event = _event(t_s, kind, node, data)
        self._last_t_s = max(self._last_t_s, event.t_s)
        if self._sink is not None:
            self._tallied(kind).add(event)
            self._sink.event(format_float(event.t_s), event_json(event) + "\n")
            for listener in self.listeners:
                listener(event)
            return
        assert self._files is None, "this recorder answers from its files"
        if (tally := self._tallies.get(kind)) is not None:
            tally.add(event)
        self._events.append(event)
        self._by_kind.setdefault(kind, []).append(event)

    def _tallied(self, kind: str) -> Tally:
        tally = self._tallies.get(kind)
        if tally is None:
            tally = self._tallies[kind] = Tally()
        return tally

    def _sample_store(self) -> Recorder:
        """The recorder whose arrays hold the samples: this one, read from the file once it
        is closed (or a fresh reading while the file is still being written)."""
        if self._files is None or self._samples_read:
            return self
        self.flush()
        store = self if self._sink is None else Recorder()
        for t_s, node, metric, value in sample_rows(self._files / SAMPLES_FILE):
            store._keep_sample(t_s, node, metric, value)
        if store is self:
            self._samples_read = True
        return store

    def _read_events(self, kind: str | None = None) -> Iterator[Event]:
        assert self._files is not None
        self.flush()
        for data in event_dicts(self._files / EVENTS_FILE, kind):
            yield _event(data["t_s"], str(data["kind"]), str(data["node"]), data["data"])

    def series(self, node: str, metric: str) -> list[tuple[float, float]]:
        """Return the `(t_s, value)` readings of `metric` at `node`, in time order."""
        store = self._sample_store()
        positions = store._series.get((node, metric), ())
        t, v = store._t, store._v
        return [(t[i], v[i]) for i in positions]

    def nodes_with(self, metric: str) -> list[str]:
        """Return the nodes that have samples of `metric`, sorted."""
        return sorted(node for node, name in self._sample_store()._series if name == metric)

    def iter_events(self, kind: str, node: str | None = None) -> Iterator[Event]:
        """The events of `kind` (at `node`, if given), in insertion order, one at a time: on
        file, read from it. A summarised kind has only its totals: ask :meth:`count_events`,
        :meth:`sum_event_data`, :meth:`per_hour` or :meth:`nodes_of`."""
        if kind in self._summarised:
            raise ValueError(f"{kind} events are summarised: read their totals")
        events = self._read_events(kind) if self._files is not None \
            else iter(self._by_kind.get(kind, []))
        return (e for e in events if node is None or e.node == node)

    def events_of(self, kind: str, node: str | None = None) -> list[Event]:
        """The events of `kind` (at `node`, if given) as a list: see :meth:`iter_events`."""
        return list(self.iter_events(kind, node))

    def count_events(self, kind: str, node: str | None = None, **match: object) -> int:
        """Count events of `kind` (at `node`) whose data equals every `key=value` in `match`
        (a summarised kind is counted without `match`)."""
        tally = self._tallies.get(kind)
        if tally is not None and not match:
            return tally.count.get(node, 0) if node is not None else sum(tally.count.values())
        if kind in self._summarised:
            raise ValueError(f"{kind} events are summarised: they are counted whole")
        return sum(1 for e in self.iter_events(kind, node) if _matches(e, match))

    def sum_event_data(self, kind: str, key: str, node: str | None = None) -> float:
        """Sum the numeric data `key` over the events of `kind` (missing values count 0)."""
        tally = self._tallies.get(kind)
        if tally is not None:
            return sum(v for (n, k), v in tally.sums.items()
                       if k == key and (node is None or n == node))
        total: float = 0
        for event in self.iter_events(kind, node):
            value = event.get(key, 0)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                total += value
        return total

    def nodes_of(self, kind: str) -> list[str]:
        """The nodes with events of `kind`, sorted."""
        tally = self._tallies.get(kind)
        if tally is not None:
            return sorted(tally.count)
        return sorted({e.node for e in self._by_kind.get(kind, [])})

    def per_hour(self, kind: str, hours: int, key: str | None = None) -> list[float]:
        """Events of `kind` per hour of simulated time for `hours` hours (bin h holds [h, h+1)
        hours), counted, or summing the numeric data `key`."""
        totals = [0.0] * hours
        tally = self._tallies.get(kind)
        if tally is not None:
            bins = tally.hourly_count if key is None else tally.hourly_sums.get(key, [])
            for hour, amount in enumerate(bins[:hours]):
                totals[hour] = float(amount)
            return totals
        for event in self._by_kind.get(kind, []):
            value = 1 if key is None else event.get(key, 0)
            if int(event.t_s // HOUR_S) < hours and isinstance(value, (int, float)) \
                    and not isinstance(value, bool):
                totals[int(event.t_s // HOUR_S)] += value
        return totals

    def last_t_s(self) -> float:
        """Return the latest time of any row, or 0.0 for an empty recording."""
        if self._files is not None and self._sink is None and not self._last_of:
            return max(self._last_t_s, self._sample_store()._last_t_s)
        return self._last_t_s

    def write_csv(self, path: Path | str) -> None:
        """Write the samples as CSV with header `t_s,node,metric,value`, "\\n" line ends
        (a streaming recorder has written them already)."""
        assert self._files is None, "a streaming recorder writes its files as it goes"
        with Path(path).open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(CSV_HEADER)
            keys, rows = self._keys, zip(self._t, self._v, self._k)
            texts = ((format_float(t_s), *keys[k], format_float(value)) for t_s, value, k in rows)
            for _, instant in groupby(texts, key=lambda row: row[0]):  # as a Sink does: decision 70
                writer.writerows(sorted(instant))

    def write_jsonl(self, path: Path | str) -> None:
        """Write one JSON object per event: {"data", "kind", "node", "t_s"}, keys sorted."""
        assert self._files is None, "a streaming recorder writes its files as it goes"
        with Path(path).open("w", encoding="utf-8") as out:
            for _, instant in groupby(self._events, key=lambda e: format_float(e.t_s)):
                out.writelines(sorted(event_json(event) + "\n" for event in instant))


def _event(t_s: object, kind: str, node: str, data: object) -> Event:
    assert isinstance(data, dict) and isinstance(t_s, (int, float))
    items = tuple(sorted((key, _data_value(key, value)) for key, value in data.items()))
    return Event(_finite(t_s, "t_s"), kind, sys.intern(node), items)


def format_float(value: float) -> str:
    """Return the deterministic text of a float: `repr(round(x, 6))`, with -0.0 written 0.0."""
    return repr(round(float(value), 6) + 0.0)


def event_json(event: Event) -> str:
    """Return the canonical one-line JSON of `event` (sorted keys, floats rounded to 6)."""
    return json.dumps(_rounded(event.as_dict()), sort_keys=True, separators=(",", ":"))


def _rounded(value: object) -> object:
    if isinstance(value, float):
        return round(value, 6) + 0.0
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return [_rounded(item) for item in value]
    return value


def _finite(value: float, name: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def _data_value(key: str, value: object) -> object:
    """Check that event data can be written as JSON; lists become tuples (hashable, frozen)."""
    if isinstance(value, (list, tuple)):
        return tuple(_data_value(key, item) for item in value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"event data {key!r} must be finite, got {value!r}")
    if isinstance(value, str):
        return sys.intern(value)  # node and SAE names recur in every event: one copy each
    if value is None or isinstance(value, (int, float, bool)):
        return value
    raise TypeError(f"event data {key!r} must be a scalar or a sequence, got {type(value)}")


_MISSING = object()  # a data value no event can hold


def _matches(event: Event, match: dict[str, object]) -> bool:
    return all(event.get(key, _MISSING) == value for key, value in match.items())


def merge_counts(counts: Iterable[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """Turn `(outer, inner)` pairs into nested sorted counts: {outer: {inner: n}}."""
    nested: dict[str, dict[str, int]] = {}
    for outer, inner in counts:
        nested.setdefault(outer, {})
        nested[outer][inner] = nested[outer].get(inner, 0) + 1
    return {k: dict(sorted(v.items())) for k, v in sorted(nested.items())}
