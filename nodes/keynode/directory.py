"""Who lives where: each SAE's home LKM and each LKM's KM. Immutable, shared by all nodes."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True, slots=True)
class Directory:
    sae_home: Mapping[str, str] = field(default_factory=dict)   # SAE ID -> LKM ID
    lkm_km: Mapping[str, str] = field(default_factory=dict)     # LKM ID -> KM ID
    sae_email: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("sae_home", "lkm_km", "sae_email"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    def home_of(self, sae_id: str) -> str | None:
        return self.sae_home.get(sae_id)

    def km_of(self, lkm_id: str) -> str:
        return self.lkm_km[lkm_id]
