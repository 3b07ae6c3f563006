"""Messages between actors, and the replies that are plain data, survive a pickle round trip
(a multi-process backend must be able to carry them), and hold no future or actor reference."""

from __future__ import annotations

import dataclasses
import pickle

import nodes.keynode.messages as keynode_messages
from nodes.keynode.store import Key
from nodes.keynode.supply import Shipment
from nodes.keynode.sync import PoolLevel, SyncOrder, SyncOutcome
from nodes.keynode.worker import SyncNext
from nodes.network import (
    Degrade,
    Generate,
    GetLatency,
    Level,
    Ping,
    Refund,
    SetDown,
    SetLatency,
    SetUp,
    Spend,
)
from nodes.traffic import MailArrived, SendMail

ORDER = SyncOrder(7, "threshold", "SAE_B", 12, 1024, "LKM_B")
KEY = Key("qk_SAE_B_000001", b"\x01" * 32)
SAMPLES = {  # a value for each field name the messages use
    "sae_id": "SAE_B", "user_email": "b@example.com", "display_name": "b", "caller": "SAE_A",
    "slave": "SAE_B", "master": "SAE_A", "key_ids": ("qk_SAE_B_000001",), "key_id": "k",
    "initial_pool_size": 10, "keys_to_add": 3, "reason": "manual", "users": ("SAE_B",),
    "home_lkm": "LKM_B", "slice_size": 5, "owner": "SAE_B", "to_lkm": "LKM_A", "count": 4,
    "order": ORDER, "start_s": 1.5, "outcome": "ok", "materials": (b"\x02" * 8,),
    "keys": (KEY,), "error": None, "number": 2, "size_bits": 256, "wait": True,
    "additional_slaves": (), "extension_mandatory": (("target_user_id", "SAE_B"),),
    "levels_only": True,
}


def instances() -> list[object]:
    made = []
    for value in vars(keynode_messages).values():
        if dataclasses.is_dataclass(value) and value.__module__ == keynode_messages.__name__:
            fields = {f.name: SAMPLES[f.name] for f in dataclasses.fields(value)}
            made.append(value(**fields))
    return made + [
        Generate(3, 1024, True), Ping(), SetDown(True), Spend(8192), Refund(8192), SetUp(False),
        Degrade(0.5), Level(), SetLatency(2.0), GetLatency(), SendMail("SAE_B", 1500),
        MailArrived("SAE_A", ("k1", "k2"), "digest", 1, ("d1",), True),
        SyncNext(ORDER, kept=False), Shipment("SAE_B", "LKM_B", "LKM_A", (KEY,), ("KM3", "KM1"), 8),
        SyncOutcome(7, "SAE_B", "aborted"), PoolLevel("SAE_B", 3, 10, 8192)]


def test_every_message_and_plain_reply_survives_a_pickle_round_trip() -> None:
    made = instances()
    assert len(made) > 25
    for message in made:
        assert pickle.loads(pickle.dumps(message)) == message, message


def test_a_waiting_sync_is_answered_with_plain_data() -> None:
    reply = [SyncOutcome(7, "SAE_B", "ok", 12).as_dict()]
    assert pickle.loads(pickle.dumps(reply)) == reply
