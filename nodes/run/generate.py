"""Generated topologies for large scenarios (city scale, national scale, scaling benchmarks).

``python -m nodes.run.generate city > scenarios/city.yaml`` writes the shipped city scenario;
``python -m nodes.run.generate backbone`` a national backbone with metro networks hanging off it.
:func:`city` and :func:`backbone` are also what ``bench/scaling.py`` calls with other sizes.
Everything is drawn from a seeded RNG, so the same arguments always give the same scenario.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from typing import Any

import yaml


def city(kms: int = 20, lkms: int = 50, users: int = 2000, duration: str = "7d", seed: int = 7,
         mails_per_hour: float = 0.2, name: str = "city") -> dict[str, Any]:
    """A ring of KMs with chords, LKMs spread over the KMs, users spread over the LKMs, and
    each user writing to one other user chosen at random. Links are decoy-state BB84 over
    10-60 km of installed fibre (docs/link-models.md), warmed up for an hour."""
    rng = random.Random(seed)
    km_ids = [f"KM{i:02d}" for i in range(1, kms + 1)]
    links = [{"a": km_ids[i], "b": km_ids[(i + 1) % kms], "length_km": rng.randint(10, 40)}
             for i in range(kms if kms > 2 else kms - 1)]
    links += [{"a": km_ids[i], "b": km_ids[(i + kms // 4) % kms], "length_km": rng.randint(20, 60)}
              for i in range(0, kms, max(kms // 4, 1)) if kms >= 8]
    for link in links:  # installed metro fibre (Tokyo QKD Network: 0.3-0.5 dB/km), GYS detectors
        link.update(model="decoy_bb84", params={"alpha_db_per_km": 0.3}, warmup="1h")
    lkm_ids = [f"LKM{i:03d}" for i in range(1, lkms + 1)]
    sae_ids = [f"SAE_{i:05d}" for i in range(1, users + 1)]
    saes = [{"id": sae, "email": f"user{i + 1}@city.example", "lkm": lkm_ids[i % lkms]}
            for i, sae in enumerate(sae_ids)]
    traffic = []
    for i, sae in enumerate(sae_ids):
        peer = rng.randrange(users - 1)
        traffic.append({"from": sae, "to": sae_ids[peer + (peer >= i)],
                        "mails_per_hour": mails_per_hour, "mail_bytes": 1500})
    return {
        "name": name, "seed": seed, "duration": duration, "sample_interval": "1h",
        "defaults": {"pool_size": 60, "slice_size": 16, "key_size_bits": 8192,
                     "sync": {"interval": "24h", "threshold": 0.1, "emergency": 0.05}},
        "kms": [{"id": km} for km in km_ids],
        "links": links,
        "lkms": [{"id": lkm, "km": km_ids[i % kms]} for i, lkm in enumerate(lkm_ids)],
        "saes": saes, "traffic": traffic,
        "outages": [{"at": "2d", "target": f"{km_ids[0]}-{km_ids[1]}", "kind": "down",
                     "for": "12h"}],
        "expect": ["no_key_reuse", "all_received_keys_match"],
    }


#: trusted-node spacing of a long-haul backbone: Beijing-Shanghai runs 2,032 km over 32 trusted
#: nodes, 63 km a hop on average (Chen et al., Nature 589, 214 (2021)); drawn uniformly around it
BACKBONE_HOP_KM = (40, 90)
#: access and metro links: a few km to about 20 (the 46-node Hefei metro network, Chen et al.,
#: npj Quantum Inf. 7, 134 (2021)); a metro's hub reaches its backbone node over 5-20 km
METRO_HOP_KM = (2, 15)
METRO_UPLINK_KM = (5, 20)
#: loss of long-haul fibre (0.2 dB/km, G.652 in the ground) and of installed metro fibre with its
#: splices and connectors (0.3 dB/km; Tokyo QKD Network, Sasaki et al., Opt. Express 19 (2011))
BACKBONE_DB_PER_KM, METRO_DB_PER_KM = 0.2, 0.3


def backbone(backbone_kms: int = 40, metros: int = 40, metro_kms: int = 7, lkms: int = 280,
             users: int = 5600, duration: str = "1d", seed: int = 11,
             mails_per_hour: float = 0.2, local_share: float = 0.8,
             name: str = "backbone") -> dict[str, Any]:
    """A national network: a backbone of trusted nodes on a perturbed grid (hops of 40-90 km,
    one link in seven left out where the grid stays connected), and ``metros`` metro networks,
    each a ring of ``metro_kms`` KMs (2-15 km hops, a chord across) whose hub hangs off its own
    backbone node (5-20 km). Backbone nodes only relay; LKMs sit on metro KMs, users on LKMs.
    Each user writes to one other user: in its own metro with probability ``local_share``,
    anywhere otherwise. Every link is decoy-state BB84 (docs/link-models.md), warmed up for
    an hour. Defaults: 40 + 40 x 7 = 320 KMs."""
    if not 1 <= metros <= backbone_kms or metro_kms < 1 or lkms < 1 or users < 2:
        raise ValueError("need 1 <= metros <= backbone_kms, metro_kms >= 1, lkms >= 1, users >= 2")
    rng = random.Random(seed)
    cols = max(1, math.ceil(math.sqrt(backbone_kms * 1.5)))  # wider than tall, as a country
    core = [f"BB{i:03d}" for i in range(1, backbone_kms + 1)]
    grid = [(i, j) for i in range(backbone_kms) for j in (i + 1, i + cols)
            if j < backbone_kms and (j == i + cols or j % cols)]
    kept = [pair for pair in grid if rng.random() >= 1 / 7]
    for pair in grid:  # put back what the grid needs to stay in one piece
        if pair not in kept and not _connected(backbone_kms, kept):
            kept.append(pair)
    links = [_link(core[i], core[j], rng.randint(*BACKBONE_HOP_KM), BACKBONE_DB_PER_KM)
             for i, j in sorted(kept)]
    homes = sorted(rng.sample(range(backbone_kms), metros))
    metro_of: dict[str, int] = {}
    for m, anchor in enumerate(homes, 1):
        ring = [f"M{m:03d}K{k}" for k in range(1, metro_kms + 1)]
        metro_of.update(dict.fromkeys(ring, m))
        links.append(_link(core[anchor], ring[0], rng.randint(*METRO_UPLINK_KM), METRO_DB_PER_KM))
        pairs = [(ring[k], ring[k + 1]) for k in range(metro_kms - 1)]
        pairs += [(ring[-1], ring[0])] if metro_kms > 2 else []
        pairs += [(ring[0], ring[metro_kms // 2])] if metro_kms >= 6 else []
        links += [_link(a, b, rng.randint(*METRO_HOP_KM), METRO_DB_PER_KM) for a, b in pairs]
    metro_kms_all = list(metro_of)
    lkm_ids = [f"LKM{i:04d}" for i in range(1, lkms + 1)]
    lkm_km = {lkm: metro_kms_all[i % len(metro_kms_all)] for i, lkm in enumerate(lkm_ids)}
    sae_ids = [f"SAE_{i:06d}" for i in range(1, users + 1)]
    home = {sae: lkm_ids[i % lkms] for i, sae in enumerate(sae_ids)}
    by_metro: dict[int, list[str]] = {}
    for sae in sae_ids:
        by_metro.setdefault(metro_of[lkm_km[home[sae]]], []).append(sae)
    traffic = []
    for sae in sae_ids:
        mates = by_metro[metro_of[lkm_km[home[sae]]]]
        pool = mates if len(mates) > 1 and rng.random() < local_share else sae_ids
        peer = sae
        while peer == sae:
            peer = pool[rng.randrange(len(pool))]
        traffic.append({"from": sae, "to": peer, "mails_per_hour": mails_per_hour,
                        "mail_bytes": 1500})
    return {
        "name": name, "seed": seed, "duration": duration, "sample_interval": "1h",
        "defaults": {"pool_size": 60, "slice_size": 16, "key_size_bits": 8192,
                     "sync": {"interval": "24h", "threshold": 0.1, "emergency": 0.05}},
        "kms": [{"id": km} for km in core + metro_kms_all],
        "links": links,
        "lkms": [{"id": lkm, "km": lkm_km[lkm]} for lkm in lkm_ids],
        "saes": [{"id": sae, "email": f"user{i + 1}@{name}.example", "lkm": home[sae]}
                 for i, sae in enumerate(sae_ids)],
        "traffic": traffic, "outages": [],
        "expect": ["no_key_reuse", "all_received_keys_match"],
    }


def _link(a: str, b: str, length_km: int, db_per_km: float) -> dict[str, Any]:
    return {"a": a, "b": b, "length_km": length_km, "model": "decoy_bb84",
            "params": {"alpha_db_per_km": db_per_km}, "warmup": "1h"}


def _connected(count: int, pairs: list[tuple[int, int]]) -> bool:
    """Whether ``pairs`` join nodes ``0 .. count - 1`` into one piece."""
    near: dict[int, list[int]] = {}
    for i, j in pairs:
        near.setdefault(i, []).append(j)
        near.setdefault(j, []).append(i)
    seen, todo = {0}, [0]
    while todo:
        for other in near.get(todo.pop(), ()):
            if other not in seen:
                seen.add(other)
                todo.append(other)
    return len(seen) == count


def main() -> int:
    parser = argparse.ArgumentParser(description="Write a generated scenario as YAML.")
    parser.add_argument("kind", choices=["city", "backbone"])
    parser.add_argument("--kms", type=int, default=None,
                        help="city: KMs in the ring (20); backbone: backbone KMs (40)")
    parser.add_argument("--metros", type=int, default=40, help="backbone: metro networks")
    parser.add_argument("--metro-kms", type=int, default=7, help="backbone: KMs per metro")
    parser.add_argument("--lkms", type=int, default=None, help="LKMs (city 50, backbone 280)")
    parser.add_argument("--users", type=int, default=None, help="users (city 2000, backbone 5600)")
    parser.add_argument("--duration", default=None, help="city 7d, backbone 1d")
    args = parser.parse_args()
    if args.kind == "city":
        data = city(args.kms or 20, args.lkms or 50, args.users or 2000, args.duration or "7d")
    else:
        try:
            data = backbone(args.kms or 40, args.metros, args.metro_kms, args.lkms or 280,
                            args.users or 5600, args.duration or "1d")
        except ValueError as error:
            parser.error(str(error))
    sys.stdout.write(f"# Generated by `python -m nodes.run.generate {args.kind}`; "
                     "edit the generator, not this.\n")
    yaml.safe_dump(data, sys.stdout, sort_keys=False, default_flow_style=None, width=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
