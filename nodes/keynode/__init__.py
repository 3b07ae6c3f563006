"""The key node room: one LKM, its per-user key pools and their SQLite store, ETSI 014 semantics
and the hybrid sync policy. Knows nothing of HTTP, of the KM network or of scenarios; the
network reaches it through its messages and its :class:`KeySupply` port.

Its public surface is ``__all__``; other rooms import only these names, from this package.
"""

from nodes.keynode.config import (
    ENV_VARIABLES,
    ConfigError,
    NodeConfig,
    SenderQuota,
    SyncPolicy,
    TlsFiles,
    is_loopback,
)
from nodes.keynode.directory import Directory
from nodes.keynode.errors import (
                                  AlreadyRegistered,
                                  BadRequest,
                                  ExtensionMandatoryUnmet,
                                  ExtensionMandatoryUnsupported,
                                  Forbidden,
                                  InsufficientKeys,
                                  KeysNotFound,
                                  KMUnreachable,
                                  MethodNotAllowed,
                                  NoLinkKey,
                                  NotFound,
                                  PayloadTooLarge,
                                  QKDError,
                                  SizeNotMultipleOf8,
                                  TooManyRequests,
                                  Unauthorized,
)
from nodes.keynode.lkm import LocalKeyManager
from nodes.keynode.messages import (
                                  AddRemote,
                                  Audit,
                                  ConsumeCopies,
                                  DeleteUser,
                                  GetKeys,
                                  GetKeysWithIds,
                                  GetKmStatus,
                                  GetStatus,
                                  ListPools,
                                  MarkConsumed,
                                  Observer,
                                  Refill,
                                  Register,
                                  ShipSlice,
                                  Sync,
                                  UnshipSlice,
                                  ignore,
)
from nodes.keynode.naming import RESERVED_IDS, check_sae_id, pool_node, sae_id_problem
from nodes.keynode.store import Key, KeyState, KeyStore, simulated_cache_kib
from nodes.keynode.supply import KeySupply, LocalKeySupply, Shipment
from nodes.keynode.views import pool_view, pools_view, status_view, sync_view

__all__ = [
    "AddRemote", "AlreadyRegistered", "Audit", "BadRequest", "ConfigError", "ConsumeCopies",
    "DeleteUser",
    "Directory", "ENV_VARIABLES", "ExtensionMandatoryUnmet", "ExtensionMandatoryUnsupported",
    "GetKeys", "GetKeysWithIds", "GetKmStatus", "GetStatus", "InsufficientKeys",
    "KMUnreachable", "Key", "NoLinkKey", "KeyState", "KeyStore", "KeySupply", "KeysNotFound", "ListPools",
    "LocalKeyManager", "LocalKeySupply", "MarkConsumed", "MethodNotAllowed", "NodeConfig", "NotFound",
    "SenderQuota", "is_loopback",
    "Observer", "PayloadTooLarge", "QKDError", "RESERVED_IDS", "Refill", "Register",
    "Shipment", "ShipSlice", "SizeNotMultipleOf8", "Sync", "SyncPolicy", "TlsFiles",
    "TooManyRequests", "Unauthorized", "UnshipSlice", "Forbidden", "check_sae_id", "ignore", "pool_node", "pool_view",
    "pools_view", "sae_id_problem", "simulated_cache_kib", "status_view", "sync_view",
]
