"""Regions in Ray actors: one actor per region, each running its region on its own event loop.

Without an address a local Ray instance is started for the run (one CPU per region) and
stopped after it; with one, the run joins that cluster, whose nodes need qkdsim installed and
a shared folder at the run's output path (each region writes its SQLite files and rows there).
Actors are named ``qkdsim-region-N`` in the namespace ``qkdsim`` so that an operator (or a
test) can find one.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from nodes.parallel.region import Region

NAMESPACE = "qkdsim"


class RegionHost:
    """A Ray actor's body: builds its region on the actor's own event loop."""

    def __init__(self) -> None:
        self.region: Region | None = None

    async def build(self, data: dict[str, Any], index: int, kms: tuple[str, ...],
                    out_dir: str) -> None:
        self.region = Region(data, index, kms, out_dir)

    async def call(self, method: str, *args: Any) -> Any:
        assert self.region is not None
        result = getattr(self.region, method)(*args)
        return await result if hasattr(result, "__await__") else result


def ray_regions(address: str | None, data: dict[str, Any], regions: Sequence[Sequence[str]],
                out_dir: str) -> tuple[list[Callable[..., Any]], Callable[[], None]]:
    from nodes.parallel.engine import EngineError

    try:
        import ray
    except ImportError:
        raise EngineError("the ray engine needs Ray: pip install 'qkdsim[ray]'") from None
    ours = not ray.is_initialized()
    if ours:
        options: dict[str, Any] = {"address": address} if address else {
            "num_cpus": len(regions), "include_dashboard": False,
            "object_store_memory": 256 * 1024 * 1024}
        try:
            ray.init(log_to_driver=False, logging_level=logging.WARNING, namespace=NAMESPACE,
                     **options)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise EngineError(f"cannot start or reach Ray{f' at {address}' if address else ''}:"
                              f" {error}") from None
    # no CPU reserved (a region never waits for one to free up), spread over the nodes
    actor_class: Any = ray.remote(num_cpus=0, max_restarts=0,
                                  scheduling_strategy="SPREAD")(RegionHost)
    actors: list[Any] = [actor_class.options(name=f"qkdsim-region-{i}", namespace=NAMESPACE,
                                  lifetime=None).remote() for i in range(len(regions))]
    ray.get([actor.build.remote(data, i, tuple(kms), out_dir)
             for i, (actor, kms) in enumerate(zip(actors, regions))])

    def calling(actor: Any) -> Callable[..., Any]:
        async def call(method: str, *args: Any) -> Any:
            return await actor.call.remote(method, *args)
        return call

    def stop() -> None:
        for actor in actors:
            ray.kill(actor)
        if ours:
            ray.shutdown()

    return [calling(actor) for actor in actors], stop
