"""The QKD domain, built on :mod:`simulator`, in rooms (sub-packages), lowest first.

A module may import its own room freely, and from the rooms ``ROOMS`` lists below it only the
names in that room's ``__all__``, from the room's package (``from nodes.keynode import Key``).
Nothing imports upwards or sideways; ``tests/test_layers.py`` holds the code to this.
"""

#: room -> the rooms it may import from (simulator is the engine, below every room)
ROOMS: dict[str, tuple[str, ...]] = {
    "simulator": (),
    "nodes.keynode": ("simulator",),
    "nodes.network": ("simulator", "nodes.keynode"),
    "nodes.server": ("simulator", "nodes.keynode"),
    "nodes.traffic": ("simulator", "nodes.keynode", "nodes.server"),
    "nodes.run": ("simulator", "nodes.keynode", "nodes.network", "nodes.server",
                  "nodes.traffic"),
    "nodes.sweep": ("simulator", "nodes.run"),
    "nodes.parallel": ("simulator", "nodes.run"),
    "nodes.testing": ("simulator", "nodes.keynode", "nodes.server", "nodes.run"),
    "nodes.dashboard": ("simulator", "nodes.keynode", "nodes.run"),
    "run_scenario": ("nodes.dashboard", "nodes.sweep", "nodes.parallel", "nodes.run", "nodes.server", "nodes.keynode", "simulator"),
}
