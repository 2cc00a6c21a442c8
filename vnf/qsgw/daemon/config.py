"""The gateway's YAML configuration, in the words swanctl.conf users know.

`load_config(path)` reads one file, validates it with pydantic (unknown
fields are refused), reads the secret files it names and returns a
`GatewayConfig`: the gateway's own settings plus the `ConnectionSpec` values
the IKE core is given. Every problem is reported as a `ConfigError` whose
lines name the file, the field path and the reason, e.g.

    site.yaml: connections.site-b.children.net.local_ts[0]: '10.1.0.0/33' is
    not an IPv4 or IPv6 network

Secrets are given only by file reference (`psk_file`, `ppk.file`); their
content never appears in an error, a log line or a repr.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import json
import logging
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from cryptography import x509
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from qsgw.ike.config import (
    Childless,
    ChildSpec,
    ConnectionSpec,
    DpdAction,
    Identity,
    IPAddress,
    Ppk,
    Secret,
    StartAction,
    TrafficSelectorSpec,
)
from qsgw.ike.constants import IdType
from qsgw.ike.payloads import Proposal
from qsgw.ike.proposals import parse_esp_proposal, parse_ike_proposal

logger = logging.getLogger(__name__)

# RFC 8784 §3 asks for PPKs with at least 256 bits of entropy.
PPK_MIN_OCTETS = 32

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
_DURATION = re.compile(r"^(\d+)\s*([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_TS = re.compile(r"^([^\[\]]+?)(?:\[([^\]]*)\])?$")
_PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmp6": 58, "ipv6-icmp": 58, "sctp": 132}


class ConfigError(Exception):
    """A configuration that cannot be used; one line per problem found."""


# --- field parsers: each raises ValueError with a message for the user --------


def parse_duration(value: object) -> int:
    """Seconds from `30s`, `15m`, `4h`, `1d` or a plain integer."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is not a duration (negative)")
        return value
    match = _DURATION.match(str(value).strip())
    if match is None:
        raise ValueError(f"'{value}' is not a duration (use e.g. 30s, 15m, 4h, 1d)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def parse_address(value: object) -> IPAddress:
    try:
        return ip_address(str(value))
    except ValueError:
        raise ValueError(f"'{value}' is not an IPv4 or IPv6 address") from None


def parse_traffic_selector(value: object) -> TrafficSelectorSpec:
    """`10.1.0.0/16`, optionally with `[proto]` or `[proto/port[-port]]`."""
    text = str(value).strip()
    match = _TS.match(text)
    if match is None:
        raise ValueError(f"'{text}' is not a traffic selector")
    try:
        network = ip_network(match.group(1).strip(), strict=True)
    except ValueError:
        raise ValueError(f"'{match.group(1)}' is not an IPv4 or IPv6 network") from None
    if match.group(2) is None:
        return TrafficSelectorSpec(network)
    protocol, ports = _parse_ts_protocol_ports(match.group(2), text)
    return TrafficSelectorSpec(network, protocol, ports)


def _parse_ts_protocol_ports(text: str, whole: str) -> tuple[int, tuple[int, int]]:
    protocol_text, _, port_text = text.partition("/")
    protocol = _parse_ip_protocol(protocol_text.strip(), whole)
    if not port_text.strip():
        return protocol, (0, 65535)
    low_text, _, high_text = port_text.strip().partition("-")
    try:
        low = int(low_text)
        high = int(high_text) if high_text else low
    except ValueError:
        raise ValueError(f"'{whole}' has a bad port or port range") from None
    if not 0 <= low <= high <= 65535:
        raise ValueError(f"'{whole}' has a bad port or port range")
    return protocol, (low, high)


def _parse_ip_protocol(text: str, whole: str) -> int:
    if text in ("", "any", "%any"):
        return 0
    if text in _PROTOCOLS:
        return _PROTOCOLS[text]
    if text.isdigit() and 0 <= int(text) <= 255:
        return int(text)
    raise ValueError(f"'{whole}' names an unknown IP protocol '{text}'")


def parse_identity(text: str) -> Identity:
    """An IKE identity, strongSwan style.

    `192.0.2.1` and `2001:db8::1` are address identities, `user@example.org`
    an email (ID_RFC822_ADDR), anything else a FQDN. Explicit prefixes:
    `fqdn:`, `email:`, `ipv4:`, `ipv6:`, `keyid:` (text, or `keyid:#<hex>`),
    `dn:` (an RFC 4514 distinguished name), and `@name` for a FQDN.
    """
    text = text.strip()
    if not text:
        raise ValueError("an identity cannot be empty")
    prefix, sep, rest = text.partition(":")
    if sep and prefix in _ID_PREFIXES:
        return _ID_PREFIXES[prefix](rest, text)
    if text.startswith("@#"):
        return _key_id("#" + text[2:], text)
    if text.startswith("@"):
        return _fqdn(text[1:], text)
    try:
        address = ip_address(text)
    except ValueError:
        pass
    else:
        return _address_identity(address)
    if "@" in text:
        return _email(text, text)
    return _fqdn(text, text)


def _address_identity(address: IPv4Address | IPv6Address) -> Identity:
    if isinstance(address, IPv4Address):
        return Identity(IdType.ID_IPV4_ADDR, address.packed)
    return Identity(IdType.ID_IPV6_ADDR, address.packed)


def _fqdn(value: str, whole: str) -> Identity:
    if not value or not value.isascii() or " " in value:
        raise ValueError(f"'{whole}' is not a valid FQDN identity")
    return Identity(IdType.ID_FQDN, value.encode("ascii"))


def _email(value: str, whole: str) -> Identity:
    if "@" not in value or not value.isascii() or " " in value:
        raise ValueError(f"'{whole}' is not a valid email identity")
    return Identity(IdType.ID_RFC822_ADDR, value.encode("ascii"))


def _ipv4(value: str, whole: str) -> Identity:
    try:
        return Identity(IdType.ID_IPV4_ADDR, IPv4Address(value).packed)
    except ValueError:
        raise ValueError(f"'{whole}' is not a valid IPv4 identity") from None


def _ipv6(value: str, whole: str) -> Identity:
    try:
        return Identity(IdType.ID_IPV6_ADDR, IPv6Address(value).packed)
    except ValueError:
        raise ValueError(f"'{whole}' is not a valid IPv6 identity") from None


def _key_id(value: str, whole: str) -> Identity:
    if value.startswith("#"):
        try:
            data = bytes.fromhex(value[1:])
        except ValueError:
            raise ValueError(f"'{whole}' is not valid hex after '#'") from None
    else:
        data = value.encode("utf-8")
    if not data:
        raise ValueError(f"'{whole}' is an empty key ID")
    return Identity(IdType.ID_KEY_ID, data)


def _dn(value: str, whole: str) -> Identity:
    try:
        name = x509.Name.from_rfc4514_string(value)
    except ValueError:
        raise ValueError(f"'{whole}' is not an RFC 4514 distinguished name") from None
    return Identity(IdType.ID_DER_ASN1_DN, name.public_bytes())


_ID_PREFIXES = {
    "fqdn": _fqdn,
    "email": _email,
    "rfc822": _email,
    "ipv4": _ipv4,
    "ipv6": _ipv6,
    "keyid": _key_id,
    "dn": _dn,
    "asn1dn": _dn,
}


def _check_identity(text: str) -> str:
    if text != "%any":
        parse_identity(text)
    return text


def _check_name(text: str) -> str:
    if not _NAME.match(text):
        raise ValueError(
            f"'{text}' is not a valid name (letters, digits, '.', '_', '-'; "
            "at most 253 characters, starting with a letter or digit)"
        )
    return text


def _parse_ike_proposal(text: str) -> Proposal:
    return parse_ike_proposal(text)


def _parse_esp_proposal(text: str) -> Proposal:
    return parse_esp_proposal(text)


def _plain_string(value: object) -> object:
    """Keep YAML's numbers and booleans from silently becoming strings."""
    if isinstance(value, bool | int | float):
        raise ValueError(f"expected a string, got {value!r}")
    return value


Duration = Annotated[int, BeforeValidator(parse_duration)]
Address = Annotated[IPAddress, BeforeValidator(parse_address)]
TsSpec = Annotated[TrafficSelectorSpec, BeforeValidator(parse_traffic_selector)]
IdentityText = Annotated[
    str, BeforeValidator(_plain_string), AfterValidator(_check_identity)
]
IkeProposal = Annotated[Proposal, BeforeValidator(_parse_ike_proposal)]
EspProposal = Annotated[Proposal, BeforeValidator(_parse_esp_proposal)]
Port = Annotated[int, Field(ge=0, le=65535)]


# --- the document -------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class LogSettings(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"
    file: Path | None = None  # default: stderr, or syslog once detached


class MetricsSettings(_Model):
    address: Address = IPv4Address("127.0.0.1")
    port: Port = 9500


class GatewaySettings(_Model):
    listen: tuple[Address, ...] = (IPv4Address("0.0.0.0"), IPv6Address("::"))
    ike_port: Port = 500
    natt_port: Port = 4500
    control_socket: Path = Path("/run/qsgw/qsgw.sock")
    data_plane: Literal["auto", "kernel", "userspace", "recording"] = "auto"
    metrics: MetricsSettings | None = None
    log: LogSettings = LogSettings()
    shutdown_timeout: Duration = 5
    # seconds between looks at the configuration file; 0: reload only on
    # SIGHUP or `qsgw reload` (Kubernetes updates a mounted ConfigMap in place)
    watch_config: Duration = 0

    @model_validator(mode="after")
    def _distinct_ports(self) -> GatewaySettings:
        if self.ike_port == self.natt_port:
            raise ValueError("ike_port and natt_port must differ")
        return self


class EndpointSettings(_Model):
    id: IdentityText
    auth: Literal["psk"] = "psk"


class RemoteEndpointSettings(_Model):
    id: IdentityText = "%any"
    auth: Literal["psk"] = "psk"


class PpkSettings(_Model):
    id: Annotated[str, BeforeValidator(_plain_string), Field(min_length=1)]
    file: Path
    required: bool = False


class ChildSettings(_Model):
    local_ts: Annotated[tuple[TsSpec, ...], Field(min_length=1)]
    remote_ts: Annotated[tuple[TsSpec, ...], Field(min_length=1)]
    esp_proposals: Annotated[tuple[EspProposal, ...], Field(min_length=1)]
    rekey_time: Duration = 3600
    life_time: Duration | None = None
    rekey_bytes: Annotated[int, Field(ge=0)] = 0
    rekey_packets: Annotated[int, Field(ge=0)] = 0
    replay_window: Annotated[int, Field(ge=0, le=4096)] = 128
    start_action: Literal["none", "start", "trap"] = "none"
    if_id: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] = 0

    @model_validator(mode="after")
    def _life_after_rekey(self) -> ChildSettings:
        life = self.life_time
        if life is not None and self.rekey_time and life <= self.rekey_time:
            raise ValueError("life_time must be longer than rekey_time")
        return self


class ConnectionSettings(_Model):
    local_addrs: tuple[Address, ...] = ()
    remote_addrs: tuple[Address, ...] = ()
    remote_port: Port = 500
    local: EndpointSettings
    remote: RemoteEndpointSettings = RemoteEndpointSettings()
    proposals: Annotated[tuple[IkeProposal, ...], Field(min_length=1)]
    psk_file: Path | None = None
    ppk: PpkSettings | None = None
    rekey_time: Duration = 14400
    over_time: Duration | None = None
    dpd_delay: Duration = 30
    dpd_timeout: Duration = 150
    dpd_action: Literal["clear", "restart", "trap"] = "clear"
    childless: Literal["allow", "force", "never"] = "allow"
    fragmentation: bool = True
    fragment_size: Annotated[int, Field(ge=576, le=65535)] = 1280
    children: dict[Annotated[str, AfterValidator(_check_name)], ChildSettings] = {}

    @model_validator(mode="after")
    def _psk_given(self) -> ConnectionSettings:
        if self.psk_file is None:
            raise ValueError("auth: psk needs psk_file")
        return self


class Document(_Model):
    gateway: GatewaySettings = GatewaySettings()
    connections: dict[Annotated[str, AfterValidator(_check_name)], ConnectionSettings]


# --- the result ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """A validated configuration with its secrets loaded."""

    source: Path
    gateway: GatewaySettings
    connections: tuple[ConnectionSpec, ...]
    _by_name: dict[str, ConnectionSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name = {c.name: c for c in self.connections}
        object.__setattr__(self, "_by_name", by_name)

    def connection(self, name: str) -> ConnectionSpec | None:
        return self._by_name.get(name)


def load_config(path: str | Path) -> GatewayConfig:
    """Read, validate and convert one configuration file."""
    source = Path(path)
    label = str(path)
    raw = _read_yaml(source, label)
    try:
        document = Document.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, label)) from None
    specs = _connection_specs(document, source.absolute().parent, label)
    return GatewayConfig(source, document.gateway, specs)


# libyaml's safe loader where PyYAML was built with it (its wheels are): the
# same documents and errors, about three times faster on a file with
# thousands of connections.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(source: Path, label: str) -> object:
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{label}: cannot read: {_os_reason(exc)}") from None
    try:
        raw = _parse(text)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(_yaml_reason(exc, label)) from None
    except yaml.YAMLError:
        raise ConfigError(f"{label}: invalid YAML") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{label}: the document must be a mapping with 'connections'")
    return raw


def _parse(text: str) -> object:
    """The document of TEXT, YAML or JSON.

    JSON, which the operator renders, is YAML too; the json module reads it
    tens of times faster than PyYAML builds the same objects (most of the
    time of loading thousands of connections). A text that is not valid
    JSON is read as YAML, whose errors name the line and column."""
    if text.lstrip().startswith("{"):
        with contextlib.suppress(ValueError):
            return json.loads(text)
    return yaml.load(text, Loader=_SafeLoader)


def _yaml_reason(exc: yaml.MarkedYAMLError, label: str) -> str:
    # The problem text only: PyYAML's full message quotes the offending line,
    # which could hold a secret pasted by mistake.
    mark = exc.problem_mark
    where = f"{label}:{mark.line + 1}:{mark.column + 1}" if mark else label
    return f"{where}: invalid YAML: {exc.problem or exc.context or 'syntax error'}"


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def _describe(exc: ValidationError, label: str) -> str:
    lines = []
    errors = exc.errors(include_input=False, include_url=False)
    for error in errors:
        if _follows_from_another(error, errors):
            continue
        field = _field_path(error["loc"])
        lines.append(f"{label}: {field}: {_reason(error)}")
    return "\n".join(lines)


def _follows_from_another(error: Any, errors: Sequence[Any]) -> bool:
    """A list left too short only because one of its items was refused."""
    loc = tuple(error["loc"])
    if error["type"] != "too_short":
        return False
    return any(tuple(e["loc"])[: len(loc)] == loc and e is not error for e in errors)


def _field_path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "[key]" and not part.startswith(("function-", "tagged-union")):
            path += f".{part}" if path else part
    return path or "(document)"


def _reason(error: Any) -> str:
    kind = error["type"]
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind == "extra_forbidden":
        return _unknown_field_reason(error["loc"])
    if kind == "missing":
        return "required field is missing"
    return str(error["msg"])


def _unknown_field_reason(loc: Sequence[int | str]) -> str:
    name = str(loc[-1]) if loc else ""
    if name in ("psk", "secret", "key", "ppk_secret"):
        return "unknown field (secrets are given by file: psk_file, ppk.file)"
    return "unknown field"


# --- conversion to the core's values ------------------------------------------


def _connection_specs(
    document: Document, base: Path, label: str
) -> tuple[ConnectionSpec, ...]:
    specs = []
    errors = []
    for name, settings in document.connections.items():
        try:
            specs.append(_connection_spec(name, settings, base, label))
        except ConfigError as exc:
            errors.append(str(exc))
    if errors:
        raise ConfigError("\n".join(errors))
    return tuple(specs)


def _connection_spec(
    name: str, settings: ConnectionSettings, base: Path, label: str
) -> ConnectionSpec:
    where = f"{label}: connections.{name}"
    assert settings.psk_file is not None  # checked by the model
    psk = _read_secret(base / settings.psk_file, f"{where}.psk_file")
    ppks: tuple[Ppk, ...] = ()
    if settings.ppk is not None:
        ppk_secret = _read_secret(base / settings.ppk.file, f"{where}.ppk.file")
        _check_ppk_length(ppk_secret, f"{where}.ppk.file")
        ppks = (Ppk(settings.ppk.id.encode("utf-8"), ppk_secret),)
    remote_id = settings.remote.id
    return ConnectionSpec(
        name=name,
        local_addresses=settings.local_addrs,
        remote_addresses=settings.remote_addrs,
        local_id=parse_identity(settings.local.id),
        remote_id=None if remote_id == "%any" else parse_identity(remote_id),
        ike_proposals=_numbered(settings.proposals),
        psk=psk,
        ppks=ppks,
        ppk_required=settings.ppk is not None and settings.ppk.required,
        children=tuple(_child_spec(n, c) for n, c in settings.children.items()),
        remote_port=settings.remote_port,
        rekey_time=settings.rekey_time,
        over_time=_over_time(settings),
        dpd_delay=settings.dpd_delay,
        dpd_timeout=settings.dpd_timeout,
        dpd_action=DpdAction(settings.dpd_action),
        childless=Childless(settings.childless),
        fragmentation=settings.fragmentation,
        fragment_size=settings.fragment_size,
    )


def _over_time(settings: ConnectionSettings) -> int:
    # swanctl.conf: over_time defaults to 10% of rekey_time.
    if settings.over_time is not None:
        return settings.over_time
    return settings.rekey_time // 10


def _child_spec(name: str, settings: ChildSettings) -> ChildSpec:
    # swanctl.conf: life_time defaults to rekey_time + 10%.
    life_time = settings.life_time
    if life_time is None:
        life_time = settings.rekey_time + settings.rekey_time // 10
    return ChildSpec(
        name=name,
        local_ts=settings.local_ts,
        remote_ts=settings.remote_ts,
        esp_proposals=_numbered(settings.esp_proposals),
        rekey_time=settings.rekey_time,
        life_time=life_time,
        rekey_bytes=settings.rekey_bytes,
        rekey_packets=settings.rekey_packets,
        replay_window=settings.replay_window,
        start_action=StartAction(settings.start_action),
        if_id=settings.if_id,
    )


def _numbered(proposals: Sequence[Proposal]) -> tuple[Proposal, ...]:
    """RFC 7296 §3.3.1: proposals are numbered 1, 2, ... in order.

    Connections with equal proposals share one tuple, across reloads too:
    the engine keeps its choices and checks of proposals by their identity
    (`qsgw.ike.proposals`), so thousands of connections offering the same
    proposals hit those caches instead of each missing them."""
    return _shared(
        tuple(
            Proposal(i, p.protocol, p.spi, p.transforms)
            for i, p in enumerate(proposals, start=1)
        )
    )


@functools.lru_cache(maxsize=1024)
def _shared(proposals: tuple[Proposal, ...]) -> tuple[Proposal, ...]:
    """The first tuple equal to PROPOSALS (the cache hands it back)."""
    return proposals


def _read_secret(path: Path, where: str) -> Secret:
    """A PSK or PPK file: `0x<hex>`, `0s<base64>` or the raw text."""
    try:
        raw = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {_os_reason(exc)}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("secret file %s is readable by group or others", path)
    value = _decode_secret(raw.strip(), f"{where}: {path}")
    if not value:
        raise ConfigError(f"{where}: {path} is empty")
    return Secret(value)


def _decode_secret(raw: bytes, where: str) -> bytes:
    if raw[:2].lower() == b"0x":
        try:
            return binascii.unhexlify(raw[2:])
        except (binascii.Error, ValueError):
            raise ConfigError(f"{where}: not valid hex after 0x") from None
    if raw[:2] == b"0s":
        try:
            return base64.b64decode(raw[2:], validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{where}: not valid base64 after 0s") from None
    return raw


def _check_ppk_length(secret: Secret, where: str) -> None:
    length = len(secret.reveal())
    if length < PPK_MIN_OCTETS:
        raise ConfigError(
            f"{where}: a PPK must be at least {PPK_MIN_OCTETS} octets "
            f"(RFC 8784 §3), this one has {length}"
        )
