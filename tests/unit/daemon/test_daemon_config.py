"""Configuration loading: good files become ConnectionSpecs, bad ones are
refused with the file, the field path and the reason, never a secret."""

from __future__ import annotations

import contextlib
import copy
import json
import os
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path
from typing import Any

import pytest
import yaml

from qsgw.daemon.config import (
    ConfigError,
    load_config,
    parse_duration,
    parse_identity,
    parse_traffic_selector,
)
from qsgw.ike.config import Childless, DpdAction, StartAction
from qsgw.ike.constants import IdType, KeId, TransformType

PSK_TEXT = "psk-that-must-never-be-printed"
PPK_HEX = "5e" * 32

BASE: dict[str, Any] = {
    "gateway": {
        "listen": ["127.0.0.1"],
        "control_socket": "/run/qsgw/test.sock",
        "data_plane": "recording",
    },
    "connections": {
        "site-b": {
            "local_addrs": ["192.0.2.1"],
            "remote_addrs": ["198.51.100.1"],
            "local": {"id": "gw-a.example.org", "auth": "psk"},
            "remote": {"id": "gw-b.example.org", "auth": "psk"},
            "proposals": ["aes256gcm16-prfsha384-x25519-ke1_mlkem768"],
            "psk_file": "site-b.psk",
            "ppk": {"id": "ppk-1", "file": "ppk-1.key", "required": True},
            "rekey_time": "4h",
            "dpd_delay": "30s",
            "dpd_action": "restart",
            "childless": "allow",
            "fragmentation": True,
            "children": {
                "net": {
                    "local_ts": ["10.1.0.0/16"],
                    "remote_ts": ["10.2.0.0/16"],
                    "esp_proposals": ["aes256gcm16-x25519-ke1_mlkem768"],
                    "rekey_time": "1h",
                    "start_action": "start",
                }
            },
        }
    },
}


def write_config(directory: Path, document: dict[str, Any]) -> Path:
    (directory / "site-b.psk").write_text(PSK_TEXT + "\n")
    (directory / "ppk-1.key").write_text("0x" + PPK_HEX + "\n")
    for name in ("site-b.psk", "ppk-1.key"):
        os.chmod(directory / name, 0o600)
    path = directory / "site.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def load_in(directory: Path, document: dict[str, Any]) -> Any:
    write_config(directory, document)
    with contextlib.chdir(directory):
        return load_config("site.yaml")


def test_example_document_becomes_connection_spec(tmp_path: Path) -> None:
    config = load_in(tmp_path, BASE)

    (spec,) = config.connections
    assert spec.name == "site-b"
    assert spec.local_addresses == (IPv4Address("192.0.2.1"),)
    assert spec.remote_addresses == (IPv4Address("198.51.100.1"),)
    assert spec.local_id.id_type == IdType.ID_FQDN
    assert spec.local_id.data == b"gw-a.example.org"
    assert spec.remote_id is not None and spec.remote_id.data == b"gw-b.example.org"
    assert spec.psk is not None and spec.psk.reveal() == PSK_TEXT.encode()
    assert spec.ppks[0].id == b"ppk-1"
    assert spec.ppks[0].secret.reveal() == bytes.fromhex(PPK_HEX)
    assert spec.ppk_required is True
    assert (spec.rekey_time, spec.over_time, spec.dpd_delay) == (14400, 1440, 30)
    assert spec.dpd_action == DpdAction.RESTART
    assert spec.childless == Childless.ALLOW


def test_proposals_are_parsed_and_numbered_in_order(tmp_path: Path) -> None:
    document = copy.deepcopy(BASE)
    document["connections"]["site-b"]["proposals"].append(
        "aes128gcm16-prfsha256-x25519"
    )

    (spec,) = load_in(tmp_path, document).connections

    assert [p.number for p in spec.ike_proposals] == [1, 2]
    addke = [
        t for t in spec.ike_proposals[0].transforms if t.type == TransformType.ADDKE1
    ]
    assert addke[0].id == KeId.ML_KEM_768


def test_child_spec_takes_swanctl_defaults(tmp_path: Path) -> None:
    (spec,) = load_in(tmp_path, BASE).connections

    (child,) = spec.children
    assert child.name == "net"
    assert child.local_ts[0].network == IPv4Network("10.1.0.0/16")
    assert child.remote_ts[0].network == IPv4Network("10.2.0.0/16")
    assert (child.rekey_time, child.life_time) == (3600, 3960)
    assert child.start_action == StartAction.START
    assert child.esp_proposals[0].number == 1


def test_gateway_defaults_are_filled_in(tmp_path: Path) -> None:
    gateway = load_in(tmp_path, BASE).gateway

    assert (gateway.ike_port, gateway.natt_port) == (500, 4500)
    assert gateway.metrics is None
    assert (gateway.log.level, gateway.log.format) == ("info", "text")


def test_secret_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, BASE)

    with contextlib.chdir("/"):
        (spec,) = load_config(path).connections

    assert spec.psk is not None and spec.psk.reveal() == PSK_TEXT.encode()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("4h", 14400), ("1d", 86400), ("90", 90), (0, 0)],
)
def test_duration_units(text: object, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "id_type", "data"),
    [
        ("gw.example.org", IdType.ID_FQDN, b"gw.example.org"),
        ("@gw.example.org", IdType.ID_FQDN, b"gw.example.org"),
        ("fqdn:192.0.2.1", IdType.ID_FQDN, b"192.0.2.1"),
        ("admin@example.org", IdType.ID_RFC822_ADDR, b"admin@example.org"),
        ("192.0.2.1", IdType.ID_IPV4_ADDR, IPv4Address("192.0.2.1").packed),
        ("2001:db8::1", IdType.ID_IPV6_ADDR, IPv6Address("2001:db8::1").packed),
        ("keyid:#0a0b", IdType.ID_KEY_ID, b"\x0a\x0b"),
        ("@#0a0b", IdType.ID_KEY_ID, b"\x0a\x0b"),
        ("keyid:site-a", IdType.ID_KEY_ID, b"site-a"),
    ],
)
def test_identity_forms(text: str, id_type: IdType, data: bytes) -> None:
    identity = parse_identity(text)
    assert (identity.id_type, identity.data) == (id_type, data)


def test_distinguished_name_identity_is_der() -> None:
    identity = parse_identity("dn:CN=gw-a,O=Example")
    assert identity.id_type == IdType.ID_DER_ASN1_DN
    assert identity.data[0] == 0x30  # a DER SEQUENCE


def test_traffic_selector_with_protocol_and_port_range() -> None:
    ts = parse_traffic_selector("10.0.0.0/8[tcp/1000-2000]")
    assert (ts.ip_protocol, ts.ports) == (6, (1000, 2000))


def _with(path: str, value: Any) -> dict[str, Any]:
    """BASE with one field (dotted path) replaced, or removed if value is ..."""
    document = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = document
    for part in parents:
        node = node[part]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return document


CONN = "connections.site-b"
CHILD = "connections.site-b.children.net"

BAD_CASES = [
    (
        _with(f"{CHILD}.local_ts", ["10.1.0.0/33"]),
        f"site.yaml: {CHILD}.local_ts[0]: '10.1.0.0/33' is not an IPv4 or IPv6 network",
    ),
    (
        _with(f"{CHILD}.remote_ts", ["10.2.0.0/16[bogus]"]),
        f"site.yaml: {CHILD}.remote_ts[0]: '10.2.0.0/16[bogus]' names an unknown "
        "IP protocol 'bogus'",
    ),
    (
        _with(f"{CHILD}.local_ts", []),
        f"site.yaml: {CHILD}.local_ts: Tuple should have at least 1 item after "
        "validation, not 0",
    ),
    (
        _with(f"{CONN}.rekey_time", "4x"),
        f"site.yaml: {CONN}.rekey_time: '4x' is not a duration "
        "(use e.g. 30s, 15m, 4h, 1d)",
    ),
    (
        _with(f"{CONN}.local_addrs", ["192.0.2.300"]),
        f"site.yaml: {CONN}.local_addrs[0]: '192.0.2.300' is not an IPv4 or IPv6 "
        "address",
    ),
    (
        _with(f"{CONN}.proposals", ["aes256gcm16-prfsha384-x99999"]),
        f"site.yaml: {CONN}.proposals[0]: 'aes256gcm16-prfsha384-x99999': unknown "
        "algorithm 'x99999'",
    ),
    (
        _with(f"{CONN}.proposals", []),
        f"site.yaml: {CONN}.proposals: Tuple should have at least 1 item after "
        "validation, not 0",
    ),
    (
        _with(f"{CONN}.local", ...),
        f"site.yaml: {CONN}.local: required field is missing",
    ),
    (
        _with(f"{CONN}.local.auth", "pubkey"),
        f"site.yaml: {CONN}.local.auth: Input should be 'psk'",
    ),
    (
        _with(f"{CONN}.remote.id", "keyid:#zz"),
        f"site.yaml: {CONN}.remote.id: 'keyid:#zz' is not valid hex after '#'",
    ),
    (
        _with(f"{CONN}.dpd_action", "hold"),
        f"site.yaml: {CONN}.dpd_action: Input should be 'clear', 'restart' or 'trap'",
    ),
    (
        _with(f"{CONN}.psk_file", ...),
        f"site.yaml: {CONN}: auth: psk needs psk_file",
    ),
    (
        _with(f"{CONN}.unknown_knob", 1),
        f"site.yaml: {CONN}.unknown_knob: unknown field",
    ),
    (
        _with(f"{CHILD}.start_action", "route"),
        f"site.yaml: {CHILD}.start_action: Input should be 'none', 'start' or 'trap'",
    ),
    (
        _with(f"{CHILD}.life_time", "30m"),
        f"site.yaml: {CHILD}: life_time must be longer than rekey_time",
    ),
    (
        _with("gateway.data_plane", "dpdk"),
        "site.yaml: gateway.data_plane: Input should be 'auto', 'kernel', "
        "'userspace' or 'recording'",
    ),
    (
        _with("gateway.natt_port", 500),
        "site.yaml: gateway: ike_port and natt_port must differ",
    ),
    (
        _with("gateway.metrics", {"port": 70000}),
        "site.yaml: gateway.metrics.port: Input should be less than or equal to 65535",
    ),
    (
        _with("connections", {"bad name": BASE["connections"]["site-b"]}),
        "site.yaml: connections.bad name: 'bad name' is not a valid name (letters, "
        "digits, '.', '_', '-'; at most 253 characters, starting with a letter or "
        "digit)",
    ),
    (
        _with("connections", ...),
        "site.yaml: connections: required field is missing",
    ),
]


@pytest.mark.parametrize(
    ("document", "expected"), BAD_CASES, ids=[c[1].split(": ")[1] for c in BAD_CASES]
)
def test_bad_field_is_refused_with_file_path_and_reason(
    tmp_path: Path, document: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_in(tmp_path, document)
    assert str(caught.value) == expected


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    document = _with(f"{CHILD}.local_ts", ["10.1.0.0/33"])
    document["connections"]["site-b"]["dpd_delay"] = "soon"

    with pytest.raises(ConfigError) as caught:
        load_in(tmp_path, document)

    assert len(str(caught.value).splitlines()) == 2


def test_inline_secret_is_refused_without_echoing_it(tmp_path: Path) -> None:
    document = _with(f"{CONN}.psk", PSK_TEXT)

    with pytest.raises(ConfigError) as caught:
        load_in(tmp_path, document)

    message = str(caught.value)
    assert message == (
        f"site.yaml: {CONN}.psk: unknown field (secrets are given by file: "
        "psk_file, ppk.file)"
    )
    assert PSK_TEXT not in message


def test_missing_secret_file_names_field_and_path(tmp_path: Path) -> None:
    document = _with(f"{CONN}.psk_file", "absent.psk")

    with pytest.raises(ConfigError) as caught:
        load_in(tmp_path, document)

    assert str(caught.value) == (
        f"site.yaml: {CONN}.psk_file: cannot read {tmp_path}/absent.psk: "
        "No such file or directory"
    )


def test_bad_hex_secret_is_refused_without_its_content(tmp_path: Path) -> None:
    path = write_config(tmp_path, BASE)
    secret = "0xdeadbeefXX" + PSK_TEXT
    (tmp_path / "site-b.psk").write_text(secret)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    message = str(caught.value)
    assert message.endswith("site-b.psk: not valid hex after 0x")
    assert PSK_TEXT not in message and "deadbeef" not in message


def test_short_ppk_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, BASE)
    (tmp_path / "ppk-1.key").write_text("0x" + "ab" * 16)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert str(caught.value) == (
        f"{path}: {CONN}.ppk.file: a PPK must be at least 32 octets "
        "(RFC 8784 §3), this one has 16"
    )


def test_base64_ppk_is_decoded(tmp_path: Path) -> None:
    import base64

    path = write_config(tmp_path, BASE)
    value = bytes(range(40))
    (tmp_path / "ppk-1.key").write_text("0s" + base64.b64encode(value).decode())

    (spec,) = load_config(path).connections

    assert spec.ppks[0].secret.reveal() == value


def test_yaml_syntax_error_gives_position_but_not_the_line(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(f"connections:\n  a: [{PSK_TEXT}\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    message = str(caught.value)
    assert message.startswith(f"{path}:3:1: invalid YAML: ")
    assert PSK_TEXT not in message


def test_unreadable_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert str(caught.value) == (
        f"{tmp_path}/nope.yaml: cannot read: No such file or directory"
    )


def test_secret_values_never_appear_in_reprs(tmp_path: Path) -> None:
    config = load_in(tmp_path, BASE)

    text = repr(config)

    assert PSK_TEXT not in text
    assert PPK_HEX not in text and bytes.fromhex(PPK_HEX).hex() not in text


def test_a_json_document_reads_as_the_same_yaml_would(tmp_path: Path) -> None:
    """JSON is YAML: the operator writes it and the daemon reads it with the
    json module; the result is what reading it as YAML gives."""
    (tmp_path / "a.psk").write_text("0x" + "11" * 32 + "\n")
    (tmp_path / "a.psk").chmod(0o600)
    document = {
        "gateway": {"listen": ["192.0.2.1"]},
        "connections": {
            "a": {
                "local_addrs": ["192.0.2.1"],
                "remote_addrs": ["192.0.2.2"],
                "local": {"id": "a.example"},
                "remote": {"id": "b.example"},
                "proposals": ["aes256gcm16-prfsha384-x25519"],
                "psk_file": "a.psk",
                "rekey_time": "2h",
            }
        },
    }
    as_json = tmp_path / "json.yaml"
    as_json.write_text(json.dumps(document, separators=(",", ":")))
    as_yaml = tmp_path / "block.yaml"
    as_yaml.write_text(yaml.safe_dump(document))
    from_json, from_yaml = load_config(as_json), load_config(as_yaml)
    assert from_json.connections == from_yaml.connections
    assert from_json.connections[0].rekey_time == 7200


def test_broken_json_is_reported_as_yaml_with_its_place(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text('{"gateway": {"listen": ["192.0.2.1"]},\n "connections": {\n')
    with pytest.raises(ConfigError, match=r"broken\.yaml:3:1: invalid YAML"):
        load_config(broken)
