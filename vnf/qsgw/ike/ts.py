"""Traffic selectors: conversion and narrowing (RFC 7296 §2.9, §3.13.1).

The responder narrows what the initiator proposed to the intersection with
its own configuration; an empty intersection is TS_UNACCEPTABLE. Selectors
on the wire are address ranges; the configuration speaks in networks, so a
range that is not one network becomes the networks that cover it exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv6Address, ip_network, summarize_address_range

from qsgw.ike.config import IPNetwork, TrafficSelectorSpec
from qsgw.ike.constants import TsType
from qsgw.ike.payloads import IPAddress, TrafficSelector


def to_selector(spec: TrafficSelectorSpec) -> TrafficSelector:
    """The wire form of one configured selector."""
    network = spec.network
    ts_type = TsType.TS_IPV4_ADDR_RANGE
    if network.version == 6:
        ts_type = TsType.TS_IPV6_ADDR_RANGE
    return TrafficSelector(
        ts_type=ts_type,
        ip_protocol=spec.ip_protocol,
        start_port=spec.ports[0],
        end_port=spec.ports[1],
        start_address=network.network_address,
        end_address=network.broadcast_address,
    )


def to_selectors(specs: Iterable[TrafficSelectorSpec]) -> tuple[TrafficSelector, ...]:
    return tuple(to_selector(spec) for spec in specs)


def to_specs(selector: TrafficSelector) -> list[TrafficSelectorSpec]:
    """The networks that cover `selector`'s address range exactly."""
    ports = (selector.start_port, selector.end_port)
    return [
        TrafficSelectorSpec(network, selector.ip_protocol, ports)
        for network in _networks(selector.start_address, selector.end_address)
    ]


def _networks(start: IPAddress, end: IPAddress) -> list[IPNetwork]:
    if isinstance(start, IPv4Address) and isinstance(end, IPv4Address):
        return list(summarize_address_range(start, end))
    if isinstance(start, IPv6Address) and isinstance(end, IPv6Address):
        return list(summarize_address_range(start, end))
    return []


def intersect(
    proposed: TrafficSelector, ours: TrafficSelectorSpec
) -> TrafficSelector | None:
    """The part of `proposed` that `ours` allows, or None."""
    theirs = to_selector(ours)
    if int(proposed.ts_type) != int(theirs.ts_type):
        return None
    protocol = _protocol(proposed.ip_protocol, theirs.ip_protocol)
    start_port = max(proposed.start_port, theirs.start_port)
    end_port = min(proposed.end_port, theirs.end_port)
    start = max(int(proposed.start_address), int(theirs.start_address))
    end = min(int(proposed.end_address), int(theirs.end_address))
    if protocol is None or start_port > end_port or start > end:
        return None
    version = proposed.start_address.version
    return TrafficSelector(
        proposed.ts_type,
        protocol,
        start_port,
        end_port,
        _address(start, version),
        _address(end, version),
    )


def _address(value: int, version: int) -> IPAddress:
    return IPv4Address(value) if version == 4 else IPv6Address(value)


def _protocol(a: int, b: int) -> int | None:
    if a == 0 or a == b:
        return b
    if b == 0:
        return a
    return None


def narrow(
    proposed: Sequence[TrafficSelector], ours: Sequence[TrafficSelectorSpec]
) -> tuple[TrafficSelector, ...]:
    """RFC 7296 §2.9: every non-empty intersection, duplicates removed."""
    result: list[TrafficSelector] = []
    for selector in proposed:
        for spec in ours:
            narrowed = intersect(selector, spec)
            if narrowed is not None and narrowed not in result:
                result.append(narrowed)
    return tuple(result)


def covered(
    selectors: Sequence[TrafficSelector], offered: Sequence[TrafficSelectorSpec]
) -> bool:
    """Whether each selector lies inside one we offered (the initiator's
    check of a narrowed answer)."""
    return all(any(intersect(s, spec) == s for spec in offered) for s in selectors)


def specs_of(selectors: Iterable[TrafficSelector]) -> tuple[TrafficSelectorSpec, ...]:
    specs: list[TrafficSelectorSpec] = []
    for selector in selectors:
        specs.extend(to_specs(selector))
    return tuple(specs)


def describe(specs: Iterable[TrafficSelectorSpec]) -> list[str]:
    """Selectors as strongSwan prints them: `10.1.0.0/16[tcp/80]`."""
    out: list[str] = []
    for spec in specs:
        text = str(spec.network)
        if spec.ip_protocol or spec.ports != (0, 65535):
            port = "" if spec.ports == (0, 65535) else f"/{_ports(spec.ports)}"
            text += f"[{spec.ip_protocol}{port}]"
        out.append(text)
    return out


def _ports(ports: tuple[int, int]) -> str:
    low, high = ports
    return str(low) if low == high else f"{low}-{high}"


def parse_network(text: str) -> IPNetwork:
    return ip_network(text)
