"""SA snapshots and connections as JSON for the control socket, and as text.

The engine's snapshots (`IkeSaInfo`) are frozen dataclasses without key
material; `to_json` turns any such value into JSON types (enums by name,
addresses as text, octets as hex) and refuses to render a `Secret` at all.
`qsgw.daemon.render` lays the result out as text.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from qsgw.ike.config import ConnectionSpec, Identity, Secret, TrafficSelectorSpec
from qsgw.ike.payloads import Proposal

JsonValue = Any

_ADDRESS_TYPES = (IPv4Address, IPv6Address, IPv4Network, IPv6Network)


_PLAIN = frozenset({str, int, float, bool, type(None)})
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def to_json(value: object) -> JsonValue:
    """A JSON-ready copy of a snapshot value; secrets become "<hidden>"."""
    if type(value) in _PLAIN:  # most fields: no isinstance chain
        return value
    if isinstance(value, Secret):
        return "<hidden>"
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return value.name if isinstance(value.value, int) else value.value
    if isinstance(value, (*_ADDRESS_TYPES, Identity)):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, TrafficSelectorSpec):
        return _ts_text(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _field_names(value)
        return {name: to_json(getattr(value, name)) for name in names}
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, Sequence | set | frozenset):
        return [to_json(v) for v in value]
    return str(value)


def _field_names(value: object) -> tuple[str, ...]:
    kind = type(value)
    names = _FIELD_NAMES.get(kind)
    if names is None:
        fields = dataclasses.fields(value)  # type: ignore[arg-type]
        names = _FIELD_NAMES[kind] = tuple(f.name for f in fields)
    return names


def _ts_text(ts: TrafficSelectorSpec) -> str:
    text = str(ts.network)
    if ts.ip_protocol or ts.ports != (0, 65535):
        low, high = ts.ports
        ports = (
            ""
            if (low, high) == (0, 65535)
            else f"/{low}" + (f"-{high}" if high != low else "")
        )
        text += f"[{ts.ip_protocol}{ports}]"
    return text


def connection_json(spec: ConnectionSpec) -> JsonValue:
    """A connection as `qsgw conns` shows it: no secrets, only whether set."""
    from qsgw.ike.proposals import describe

    return {
        "name": spec.name,
        "local_addrs": [str(a) for a in spec.local_addresses],
        "remote_addrs": [str(a) for a in spec.remote_addresses],
        "remote_port": spec.remote_port,
        "local_id": str(spec.local_id),
        "remote_id": str(spec.remote_id) if spec.remote_id else "%any",
        "proposals": [_describe(describe, p) for p in spec.ike_proposals],
        "psk": spec.psk is not None,
        "ppk_ids": [p.id.decode("utf-8", "replace") for p in spec.ppks],
        "ppk_required": spec.ppk_required,
        "rekey_time": spec.rekey_time,
        "dpd_delay": spec.dpd_delay,
        "children": [_child_json(describe, c) for c in spec.children],
    }


def _describe(describe: Any, proposal: Proposal) -> str:
    return str(describe(proposal))


def _child_json(describe: Any, child: Any) -> JsonValue:
    return {
        "name": child.name,
        "local_ts": [_ts_text(t) for t in child.local_ts],
        "remote_ts": [_ts_text(t) for t in child.remote_ts],
        "esp_proposals": [_describe(describe, p) for p in child.esp_proposals],
        "rekey_time": child.rekey_time,
        "life_time": child.life_time,
        "start_action": child.start_action.value,
    }


# The engine's times are on its monotonic clock, meaningless to a reader:
# they are shown relative to now.
_TIMES = (
    ("established", "established_seconds_ago", -1),
    ("rekey_time", "rekey_in_seconds", 1),
    ("life_time", "expires_in_seconds", 1),
)


def relative_times(entry: dict[str, Any], now: float) -> dict[str, Any]:
    """An SA snapshot with its clock times turned into seconds from `now`."""
    out = dict(entry)
    for name, relative, sign in _TIMES:
        if name in out:
            value = out.pop(name)
            out[relative] = None if value is None else round(sign * (value - now), 1)
    if isinstance(out.get("children"), list):
        out["children"] = [relative_times(c, now) for c in out["children"]]
    return out
