"""The engine: a discrete-event clock, actors with mailboxes and supervision, a simulation that
owns one run, and a recorder of its rows. Knows nothing of QKD, HTTP or SQLite.

This is the package's public surface; the rooms of ``nodes`` import only these names.
"""

from simulator.activity import Activity, Lease, Stalled
from simulator.actor import Actor, ActorRef, ActorStopped, AskTimeout, Directive, Failure, Promise
from simulator.clock import Clock, ClockError, Progress, Timer, TimerKey, VirtualClock, WallClock
from simulator.durations import format_duration, parse_duration
from simulator.metrics import Event, Recorder, Sample, event_json, format_float, merge_counts
from simulator.outbox import Letter, Outbox, RemoteRef, tell_later
from simulator.records import CSV_HEADER, EVENTS_FILE, SAMPLES_FILE, repair, whole_lines
from simulator.runtime import Simulation
from simulator.streams import Stream
from simulator.system import SYSTEM, ActorSystem

__all__ = [
    "EVENTS_FILE", "SAMPLES_FILE", "Activity", "Actor", "ActorRef", "ActorStopped", "ActorSystem", "AskTimeout", "Clock",
    "ClockError", "Directive", "Event", "Failure", "Lease", "Progress", "Promise", "Recorder",
    "SYSTEM", "Sample", "Simulation", "Stalled", "Stream", "Timer", "VirtualClock", "WallClock",
    "Letter", "Outbox", "RemoteRef", "TimerKey", "tell_later", "CSV_HEADER", "whole_lines",
    "event_json", "format_duration", "format_float", "merge_counts", "parse_duration", "repair",
]
