"""The demo's network: two namespaces joined by a veth pair.

    namespace A                                  namespace B
    lo 10.10.1.1 (the protected side)            lo 10.10.2.1
    veth 192.0.2.1/24   <------------------->    veth 192.0.2.2/24

Addresses come from the documentation ranges (RFC 5737 for the outer,
RFC 1918 for the inner side) and exist only inside the namespaces. Names
carry a random run id so that runs never collide; the veth ends are
created directly inside the namespaces, so nothing appears on the host.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from qsgw.demo.cleanup import Cleanup
from qsgw.demo.timing import TIME_SCALE

COMMAND_TIMEOUT = 10.0 * TIME_SCALE
PREFIX = "qsgw-demo-"


class DemoError(Exception):
    """A step of the demo failed; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Side:
    """One gateway's place in the topology."""

    label: str  # "A" or "B"
    namespace: str
    veth: str
    outer: IPv4Address
    inner: IPv4Address
    inner_network: IPv4Network


@dataclass(frozen=True, slots=True)
class Topology:
    run_id: str
    a: Side
    b: Side

    @property
    def namespaces(self) -> tuple[str, str]:
        return self.a.namespace, self.b.namespace


def new_topology() -> Topology:
    run_id = secrets.token_hex(4)
    return Topology(
        run_id,
        _side("A", run_id, "192.0.2.1", "10.10.1.1", "10.10.1.0/24"),
        _side("B", run_id, "192.0.2.2", "10.10.2.1", "10.10.2.0/24"),
    )


def _side(label: str, run_id: str, outer: str, inner: str, network: str) -> Side:
    suffix = label.lower()
    return Side(
        label,
        f"{PREFIX}{run_id}-{suffix}",
        f"demo-{suffix}",
        IPv4Address(outer),
        IPv4Address(inner),
        IPv4Network(network),
    )


def run(command: list[str], what: str, timeout: float = COMMAND_TIMEOUT) -> str:
    """Run a short command; its stdout, or DemoError with its stderr."""
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise DemoError(f"{what}: no answer within {timeout:g} s") from None
    except OSError as exc:
        raise DemoError(f"{what}: cannot run {command[0]}: {exc.strerror}") from None
    if result.returncode != 0:
        detail = result.stderr.strip() or f"exit status {result.returncode}"
        raise DemoError(f"{what}: {detail}")
    return result.stdout


def in_namespace(namespace: str, *command: str) -> list[str]:
    return ["ip", "netns", "exec", namespace, *command]


def build(topology: Topology, cleanup: Cleanup) -> None:
    """Create both namespaces and the veth pair and address them."""
    for side in (topology.a, topology.b):
        run(["ip", "netns", "add", side.namespace], f"create {side.namespace}")
        cleanup.push(f"namespace {side.namespace}", _deleter(side.namespace))
    a, b = topology.a, topology.b
    link = ["ip", "link", "add", a.veth, "netns", a.namespace, "type", "veth"]
    peer = ["peer", "name", b.veth, "netns", b.namespace]
    run(link + peer, "create the veth pair")
    for side in (a, b):
        _address(side)


def _address(side: Side) -> None:
    ip = ["ip", "-n", side.namespace]
    where = f"set up {side.namespace}"
    run([*ip, "link", "set", "lo", "up"], where)
    run([*ip, "address", "add", f"{side.inner}/32", "dev", "lo"], where)
    run([*ip, "address", "add", f"{side.outer}/24", "dev", side.veth], where)
    run([*ip, "link", "set", side.veth, "up"], where)


def _deleter(namespace: str) -> Callable[[], None]:
    def delete() -> None:
        run(["ip", "netns", "delete", namespace], f"delete {namespace}")

    return delete


def leftover_namespaces(run_id: str) -> list[str]:
    """Namespaces of this run that still exist (for checks after a run)."""
    listing = run(["ip", "netns", "list"], "list namespaces")
    names = [line.split()[0] for line in listing.splitlines() if line.strip()]
    return [n for n in names if n.startswith(f"{PREFIX}{run_id}-")]


# --- which data plane --------------------------------------------------------

# RFC 4106 AES-GCM with a 16-octet ICV, as the demo's ESP proposal asks; the
# key is a throw-away constant: the probe state carries no traffic and is
# deleted at once.
_PROBE_AEAD = "rfc4106(gcm(aes))"
_PROBE_KEY = "0x" + "00" * 36
_PROBE_SPI = "0x00000100"


def kernel_refusal(side: Side, peer: Side) -> str:
    """Why the kernel of this machine cannot carry the demo's ESP, or ""."""
    ip = ["ip", "-n", side.namespace, "xfrm", "state"]
    state = ["src", str(side.outer), "dst", str(peer.outer), "proto", "esp"]
    add = [*ip, "add", *state, "spi", _PROBE_SPI, "mode", "tunnel"]
    aead = ["aead", _PROBE_AEAD, _PROBE_KEY, "128"]
    try:
        run(add + aead, "add an ESP state")
    except DemoError as exc:
        return str(exc)
    run([*ip, "flush"], "remove the probe ESP state")
    return ""


def choose_data_plane(requested: str, topology: Topology) -> str:
    """`auto` is the kernel when it accepts ESP states, else userspace."""
    if requested == "userspace":
        return requested
    refusal = kernel_refusal(topology.a, topology.b)
    if not refusal:
        return "kernel"
    if requested == "kernel":
        raise DemoError(
            "the kernel data plane cannot run here, the kernel refuses ESP "
            f"({refusal}); use --data-plane userspace"
        )
    return "userspace"
