"""Control-socket answers as text, in the spirit of `swanctl --list-sas`.

Works on the JSON the daemon sends, so the CLI needs none of the daemon's
modules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def render_sas(sas: Sequence[Mapping[str, Any]]) -> str:
    """IKE and Child SAs laid out like `swanctl --list-sas`."""
    if not sas:
        return "no IKE SAs"
    return "\n".join(_render_ike_sa(sa) for sa in sas)


def _render_ike_sa(sa: Mapping[str, Any]) -> str:
    mine = "_i*" if sa.get("initiator") else "_i"
    theirs = "_r" if sa.get("initiator") else "_r*"
    lines = [
        f"{sa.get('connection')}: #{sa.get('unique_id')}, {sa.get('state')}, "
        f"IKEv2, {sa.get('spi_i')}{mine} {sa.get('spi_r')}{theirs}",
        f"  local  '{sa.get('local_id')}' @ "
        f"{sa.get('local_address')}[{sa.get('local_port')}]",
        f"  remote '{sa.get('remote_id')}' @ "
        f"{sa.get('remote_address')}[{sa.get('remote_port')}]",
        f"  {_algorithms(sa.get('algorithms', {}))}",
        f"  ppk: {'yes' if sa.get('ppk') else 'no'}, "
        f"nat: {_nat(sa)}, rekeys: {sa.get('rekeys', 0)}",
        f"  {_times(sa)}",
    ]
    lines += [_render_child(c) for c in sa.get("children", [])]
    return "\n".join(lines)


def _render_child(child: Mapping[str, Any]) -> str:
    return "\n".join(
        (
            f"  {child.get('name')}: #{child.get('unique_id')}, "
            f"{child.get('state')}, ESP SPIs: {child.get('inbound_spi')}_i "
            f"{child.get('outbound_spi')}_o",
            f"    {_algorithms(child.get('algorithms', {}))}",
            f"    {_times(child)}, rekeys: {child.get('rekeys', 0)}",
            *_traffic(child),
            f"    local  {', '.join(child.get('local_ts', []))}",
            f"    remote {', '.join(child.get('remote_ts', []))}",
        )
    )


def _traffic(child: Mapping[str, Any]) -> list[str]:
    if "bytes_in" not in child:
        return []
    return [
        f"    in  {child['bytes_in']} bytes, {child['packets_in']} packets; "
        f"out {child['bytes_out']} bytes, {child['packets_out']} packets"
    ]


def _algorithms(algorithms: Mapping[str, str]) -> str:
    return "/".join(f"{kind}={name}" for kind, name in algorithms.items()) or "-"


def _nat(sa: Mapping[str, Any]) -> str:
    where = [s for s in ("local", "remote") if sa.get(f"nat_{s}")]
    return " and ".join(where) or "none"


def _times(entry: Mapping[str, Any]) -> str:
    parts = []
    if entry.get("established_seconds_ago") is not None:
        parts.append(f"established {entry['established_seconds_ago']:g}s ago")
    if entry.get("rekey_in_seconds") is not None:
        parts.append(f"rekeying in {entry['rekey_in_seconds']:g}s")
    if entry.get("expires_in_seconds") is not None:
        parts.append(f"expires in {entry['expires_in_seconds']:g}s")
    return ", ".join(parts) or "not established"


def render_conns(conns: Sequence[Mapping[str, Any]]) -> str:
    if not conns:
        return "no connections loaded"
    return "\n".join(_render_mapping(c, 0, str(c.get("name", "?"))) for c in conns)


def render_mapping(value: Mapping[str, Any]) -> str:
    return _render_mapping(value, 0, None)


def _render_mapping(value: Mapping[str, Any], depth: int, title: str | None) -> str:
    pad = "  " * depth
    lines = [f"{pad}{title}"] if title else []
    inner = "  " * (depth + 1) if title else pad
    for key, item in value.items():
        if key == "name" and title:
            continue
        if isinstance(item, Mapping):
            sub = depth + (1 if title else 0)
            lines.append(_render_mapping(item, sub, f"{key}:"))
        elif _is_list_of_mappings(item):
            lines.append(f"{inner}{key}:")
            for entry in item:
                sub = depth + (2 if title else 1)
                lines.append(_render_mapping(entry, sub, str(entry.get("name", ""))))
        elif isinstance(item, list):
            lines.append(f"{inner}{key}: {', '.join(str(v) for v in item) or '-'}")
        else:
            lines.append(f"{inner}{key}: {item}")
    return "\n".join(lines)


def _is_list_of_mappings(item: object) -> bool:
    return isinstance(item, list) and bool(item) and isinstance(item[0], Mapping)
