"""Cross-reference checks of a scenario: each returns (path, message) pairs, paths from the
scenario root. What an outage may target is the outage table's (:mod:`nodes.run.outages`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nodes.run.outages import target_kinds_of
from nodes.run.scenario.base import Loc
from nodes.run.scenario.schema import MailTraffic, Outage, SyncOverride, SyncPolicy
from simulator import format_duration

if TYPE_CHECKING:
    from nodes.run.scenario.model import Scenario


def target_kinds(scenario: Scenario) -> dict[str, str]:
    """Map every name an outage may target to its kind; links are named both ways round."""
    kinds: dict[str, str] = {}
    for kind, items in (("KM", scenario.kms), ("LKM", scenario.lkms), ("SAE", scenario.saes)):
        kinds.update((item.id, kind) for item in items)
    for link in scenario.links:
        kinds.setdefault(f"{link.a}-{link.b}", "link")
        kinds.setdefault(f"{link.b}-{link.a}", "link")
    return kinds




def reference_errors(s: Scenario) -> list[tuple[Loc, str]]:
    """Return every problem that involves more than one part of the scenario."""
    return [
        *_id_errors(s),
        *_lkm_errors(s),
        *_sae_errors(s),
        *_link_errors(s),
        *_traffic_errors(s),
        *_outage_errors(s),
        *_clock_errors(s),
        *_expectation_errors(s),
    ]


def _expectation_errors(s: Scenario) -> list[tuple[Loc, str]]:
    saes = {sae.id for sae in s.saes}
    return [(("expect", i, "max_failed_sends", "sender"), f"unknown SAE '{e.sender}'")
            for i, e in enumerate(s.expect) if e.sender is not None and e.sender not in saes]


def _id_errors(s: Scenario) -> list[tuple[Loc, str]]:
    errors: list[tuple[Loc, str]] = []
    seen: dict[str, str] = {}
    for section in ("kms", "lkms", "saes"):
        for i, item in enumerate(getattr(s, section)):
            if item.id in seen:
                message = f"duplicate id '{item.id}' (also {seen[item.id]})"
                errors.append(((section, i, "id"), message))
            seen.setdefault(item.id, f"{section}.{i}")
    return errors


def _lkm_errors(s: Scenario) -> list[tuple[Loc, str]]:
    errors: list[tuple[Loc, str]] = []
    kms = {km.id for km in s.kms}
    ports: dict[int, str] = {}
    for i, lkm in enumerate(s.lkms):
        if lkm.km not in kms:
            errors.append((("lkms", i, "km"), f"unknown KM '{lkm.km}'"))
        if lkm.port is not None and lkm.port in ports:
            message = f"port {lkm.port} already used by {ports[lkm.port]}"
            errors.append((("lkms", i, "port"), message))
        if lkm.port is not None:
            ports.setdefault(lkm.port, lkm.id)
        errors += _sync_override_errors(s.defaults.sync, lkm.sync, ("lkms", i, "sync"))
    return errors


def _sync_override_errors(
    base: SyncPolicy, override: SyncOverride | None, loc: Loc
) -> list[tuple[Loc, str]]:
    if override is None:
        return []
    threshold = base.threshold if override.threshold is None else override.threshold
    emergency = base.emergency if override.emergency is None else override.emergency
    if emergency > threshold:
        return [((*loc, "emergency"), f"{emergency} must not exceed threshold ({threshold})")]
    return []


def _sae_errors(s: Scenario) -> list[tuple[Loc, str]]:
    errors: list[tuple[Loc, str]] = []
    lkms = {lkm.id for lkm in s.lkms}
    emails: dict[str, str] = {}
    for i, sae in enumerate(s.saes):
        if sae.lkm not in lkms:
            errors.append((("saes", i, "lkm"), f"unknown LKM '{sae.lkm}'"))
        email = sae.email.lower()
        if email in emails:
            message = f"duplicate email '{sae.email}' (also {emails[email]})"
            errors.append((("saes", i, "email"), message))
        emails.setdefault(email, sae.id)
    return errors


def _link_errors(s: Scenario) -> list[tuple[Loc, str]]:
    errors: list[tuple[Loc, str]] = []
    kms = {km.id for km in s.kms}
    seen: dict[frozenset[str], int] = {}
    for i, link in enumerate(s.links):
        for end in ("a", "b"):
            if getattr(link, end) not in kms:
                errors.append((("links", i, end), f"unknown KM '{getattr(link, end)}'"))
        pair = frozenset((link.a, link.b))
        if link.a == link.b:
            errors.append((("links", i, "b"), f"link joins '{link.a}' to itself"))
        elif pair in seen:
            errors.append((("links", i), f"duplicate link {link.id} (also links.{seen[pair]})"))
        seen.setdefault(pair, i)
    return errors


def _traffic_errors(s: Scenario) -> list[tuple[Loc, str]]:
    errors: list[tuple[Loc, str]] = []
    saes = {sae.id for sae in s.saes}
    for i, flow in enumerate(s.traffic):
        if not isinstance(flow, MailTraffic):
            continue
        for key, sae_id in (("from", flow.from_sae), ("to", flow.to_sae)):
            if sae_id not in saes:
                errors.append((("traffic", i, key), f"unknown SAE '{sae_id}'"))
        if flow.from_sae == flow.to_sae:
            errors.append((("traffic", i, "to"), f"traffic from '{flow.from_sae}' to itself"))
    return errors


_A = {"KM": "a KM", "LKM": "an LKM", "SAE": "an SAE", "link": "a link 'A-B'"}


def _outage_errors(s: Scenario) -> list[tuple[Loc, str]]:
    errors: list[tuple[Loc, str]] = []
    kinds = target_kinds(s)
    for i, outage in enumerate(s.outages):
        if outage.at_s >= s.duration_s:
            end = format_duration(s.duration_s)
            at = format_duration(outage.at_s)
            errors.append((("outages", i, "at"), f"{at} is not before the end of the run ({end})"))
        if outage.target is not None:
            errors += _target_errors(outage, kinds.get(outage.target), ("outages", i, "target"))
        if outage.kind == "qber_rise" and kinds.get(outage.target or "") == "link":
            errors += _qber_errors(s, outage, ("outages", i))
        errors += _group_errors(outage.groups or (), kinds, ("outages", i, "groups"))
    return errors


def _target_errors(outage: Outage, found: str | None, loc: Loc) -> list[tuple[Loc, str]]:
    allowed = [kind for kind in target_kinds_of(outage.kind) if kind is not None]
    names = [_A[kind] for kind in allowed]
    wanted = " or ".join(filter(None, [", ".join(names[:-1]), names[-1]]))
    if found is None:
        return [(loc, f"unknown target '{outage.target}' (expected {wanted})")]
    if found not in allowed:
        return [(loc, f"'{outage.target}' is {_A[found]}; {outage.kind} needs {wanted}")]
    return []


def _qber_errors(s: Scenario, outage: Outage, loc: Loc) -> list[tuple[Loc, str]]:
    a, b = (outage.target or "").split("-", 1)
    link = next(ln for ln in s.links if {ln.a, ln.b} == {a, b})
    model = link.physical()
    if model is None:
        return [((*loc, "target"), f"qber_rise needs a link with model 'decoy_bb84' "
                                   f"('{outage.target}' has model '{link.kind}')")]
    assert link.length_km is not None and outage.qber is not None
    nominal = model.qber(link.length_km)
    if outage.qber <= nominal:
        return [((*loc, "qber"), f"{outage.qber:g} is not above the link's own QBER "
                                 f"({nominal:.4f})")]
    return []


def _group_errors(
    groups: tuple[tuple[str, ...], ...], kinds: dict[str, str], loc: Loc
) -> list[tuple[Loc, str]]:
    errors: list[tuple[Loc, str]] = []
    placed: set[str] = set()
    for g, group in enumerate(groups):
        for k, km in enumerate(group):
            if kinds.get(km) != "KM":
                errors.append(((*loc, g, k), f"unknown KM '{km}'"))
            elif km in placed:
                errors.append(((*loc, g, k), f"KM '{km}' is in more than one group"))
            placed.add(km)
    return errors


def _clock_errors(s: Scenario) -> list[tuple[Loc, str]]:
    if s.time_scale != 1 and s.clock != "wall":  # 1 is harmless: the brief's example has it
        return [(("time_scale",), f"{s.time_scale:g} only applies with clock: wall")]
    return []
