"""The sample city as the demo's scenes see it: which switches play which part.

From the inventory's switch tree: an *aggregation* switch per district (one
whose children are all access switches; its fibre is the one the scenes
cut), the *access* switches behind it that have a subscriber (one of them
loses power), and one subscriber's number per switch (the callers whose
calls the scenes place). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class City:
    """The parts of the inventory the scenes use."""

    district_of: dict[str, str]
    """switch id -> district id"""
    names: dict[str, str]
    """district id -> name"""
    aggregation: list[str]
    """one switch per district whose children are all access switches, in inventory order"""
    access: dict[str, list[str]]
    """aggregation switch -> its access switches that have a subscriber"""
    number_on: dict[str, str]
    """switch id -> one subscriber's number, as billing wrote it"""
    children: dict[str, list[str]]
    """switch id -> the switches whose uplink it is"""

    @classmethod
    def of(
        cls,
        switches: dict[str, tuple[str, str | None]],
        names: dict[str, str],
        number_on: dict[str, str],
    ) -> City | str:
        """From switch id -> (district, parent); or what the inventory lacks."""
        children: dict[str, list[str]] = {}
        for switch, (_, parent) in switches.items():
            if parent:
                children.setdefault(parent, []).append(switch)
        aggregation: list[str] = []
        access: dict[str, list[str]] = {}
        for switch, (district, _) in switches.items():
            below = children.get(switch, [])
            leaves = [s for s in below if s not in children and s in number_on]
            if district not in names:
                continue  # the import rejects it
            taken = {switches[a][0] for a in aggregation}
            simple = below and not any(s in children for s in below) and len(leaves) >= 2
            if simple and district not in taken:
                aggregation.append(switch)
                access[switch] = leaves
        if len(aggregation) < 4:
            return (
                "the demo needs at least four districts, each with an aggregation switch"
                " and two or more access switches with subscribers behind it (as in"
                " examples/inventory)"
            )
        district_of = {s: d for s, (d, _) in switches.items()}
        return cls(district_of, names, aggregation, access, number_on, children)
