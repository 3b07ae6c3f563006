"""What names mean to a key node: valid SAE IDs (one list of reserved words, which the routes,
the LKM and scenario validation all use) and the names of pools in recorded rows."""

from __future__ import annotations

from nodes.keynode.errors import BadRequest

#: route words under /api/v1/keys/ that can never be SAE IDs
RESERVED_IDS = frozenset({"register", "pools", "km", "mark_consumed", "sync"})
MAX_SAE_ID_LENGTH = 128


def sae_id_problem(sae_id: str) -> str | None:
    """Why ``sae_id`` cannot name an SAE, or None: SAE IDs are data, any printable text of 1
    to 128 characters without surrounding spaces, but not a reserved route word."""
    if not sae_id or len(sae_id) > MAX_SAE_ID_LENGTH:
        return f"sae_id must be 1 to {MAX_SAE_ID_LENGTH} characters"
    if sae_id in RESERVED_IDS:
        return f"'{sae_id}' is a reserved word, not an SAE ID"
    if not sae_id.isprintable() or sae_id != sae_id.strip():
        return "sae_id must be printable and not start or end with spaces"
    return None


def check_sae_id(sae_id: str) -> None:
    problem = sae_id_problem(sae_id)
    if problem is not None:
        raise BadRequest(problem)


def pool_node(lkm_id: str, owner_sae: str) -> str:
    """Return the node name of the pool (or remote slice) of `owner_sae` held at `lkm_id`.

    An LKM holds either the home pool of an SAE or a slice of it, never both, so
    "LKM_A/SAE_BOB_001" names exactly one pool.
    """
    return f"{lkm_id}/{owner_sae}"
