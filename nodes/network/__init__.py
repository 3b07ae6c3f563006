"""The network room: key managers, QKD links, routing, and the relay that fills remote slices.
Built on the key node's messages and its KeySupply port; knows nothing of HTTP or scenarios.

Its public surface is ``__all__``; other rooms import only these names, from this package.
"""

from nodes.network.km import Generate, KeyManager, Ping, SetDown
from nodes.network.link import (
    STATES,
    Available,
    Degrade,
    GetAccount,
    GetLatency,
    Level,
    LinkSpec,
    QKDLink,
    Refund,
    SetLatency,
    SetQber,
    SetUp,
    Spend,
    least_hop_delay_s,
)
from nodes.network.partition import NoLookahead, Plan, cut_links, plan_partitions
from nodes.network.rates import (
    CALIBRATION,
    GYS_CUTOFF_KM,
    PARAMETER_NAMES,
    PRESETS,
    DecoyBB84,
    budget_rate_bps,
    calibration_rows,
    preset_model,
)
from nodes.network.relay import KMNetwork
from nodes.network.routing import (
    ROUTING_POLICIES,
    Edge,
    bottleneck,
    edge_key,
    hops,
    km_graph,
    shortest_path,
)

__all__ = [
    "Available", "CALIBRATION", "DecoyBB84", "GYS_CUTOFF_KM", "GetAccount", "LinkSpec",
    "PARAMETER_NAMES", "PRESETS", "STATES", "SetQber", "budget_rate_bps", "calibration_rows",
    "preset_model", "bottleneck", "ROUTING_POLICIES",
    "Degrade", "Edge", "Generate", "GetLatency", "KMNetwork", "KeyManager", "Level", "Ping",
    "QKDLink", "Refund", "SetDown", "SetLatency", "SetUp", "Spend", "edge_key", "hops",
    "km_graph", "shortest_path", "NoLookahead", "Plan", "cut_links", "plan_partitions",
    "least_hop_delay_s",
]
