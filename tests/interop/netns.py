"""Network namespaces joined by veth pairs, for peers that must not touch the host.

Every name carries the test run's process id and a counter, so concurrent runs
and leftovers from a crashed run never collide. Addresses come from the
documentation ranges (RFC 5737, RFC 3849) and exist only inside the
namespaces created here.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

COMMAND_TIMEOUT = 20.0
_counter = itertools.count(1)


class NetnsError(RuntimeError):
    """A namespace command failed."""


def run(argv: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> str:
    """Runs a host command, returns its stdout, raises NetnsError on failure."""
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        detail = result.stderr.strip() or result.stdout.strip()
        raise NetnsError(f"{' '.join(argv)} exited {result.returncode}: {detail}")
    return result.stdout


def unique_name(prefix: str) -> str:
    """A namespace name unique to this process: PREFIX-PID-N."""
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


@dataclass(frozen=True)
class Namespace:
    """One network namespace, by name."""

    name: str

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """The argv that runs ARGV inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> str:
        return run(self.exec_argv(argv), timeout)

    def ip(self, *args: str) -> str:
        return run(["ip", "-n", self.name, *args])

    def link_exists(self, link: str) -> bool:
        result = subprocess.run(
            ["ip", "-n", self.name, "link", "show", "dev", link],
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        return result.returncode == 0

    def ping(
        self, destination: str, source: str, count: int = 3, wait: float = 2.0
    ) -> bool:
        """True when at least one echo reply came back from DESTINATION."""
        argv = ["ping", "-n", "-q", "-i", "0.2", "-c", str(count), "-W", str(wait)]
        argv += ["-I", source, destination]
        result = subprocess.run(
            self.exec_argv(argv),
            capture_output=True,
            timeout=count * (wait + 1) + 5,
            check=False,
        )
        return result.returncode == 0


def create_namespace(prefix: str) -> Namespace:
    """Creates a namespace with loopback up."""
    namespace = Namespace(unique_name(prefix))
    run(["ip", "netns", "add", namespace.name])
    namespace.ip("link", "set", "lo", "up")
    return namespace


def delete_namespace(namespace: Namespace) -> None:
    """Deletes the namespace; its veth ends and addresses go with it."""
    subprocess.run(
        ["ip", "netns", "delete", namespace.name],
        capture_output=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


@dataclass(frozen=True)
class Site:
    """One side of a pair: its namespace, outer and inner addresses."""

    namespace: Namespace
    identity: str
    link: str
    outer4: str
    outer6: str
    inner4: str
    inner6: str

    def outer(self, family: int) -> str:
        """The outer address of IP version FAMILY (4 or 6)."""
        return self.outer4 if family == 4 else self.outer6

    def inner(self, family: int) -> str:
        return self.inner4 if family == 4 else self.inner6

    def inner_net(self, family: int) -> str:
        return self.inner4_net if family == 4 else self.inner6_net

    @property
    def inner4_net(self) -> str:
        return f"{self.inner4}/32"

    @property
    def inner6_net(self) -> str:
        return f"{self.inner6}/128"


@dataclass(frozen=True)
class SitePair:
    """Two namespaces joined by one veth pair (the "outer" network).

    left:  192.0.2.1/24, 2001:db8:0:1::1/64; inner 198.51.100.1, 2001:db8:0:a::1
    right: 192.0.2.2/24, 2001:db8:0:1::2/64; inner 203.0.113.1,  2001:db8:0:b::1
    Their IKE identities are the FQDNs left.example and right.example.
    The inner addresses live on each namespace's loopback and are what the
    tunnels' traffic selectors cover.
    """

    left: Site
    right: Site

    def delete(self) -> None:
        delete_namespace(self.left.namespace)
        delete_namespace(self.right.namespace)


LEFT_ADDRESSES = ("192.0.2.1", "2001:db8:0:1::1", "198.51.100.1", "2001:db8:0:a::1")
RIGHT_ADDRESSES = ("192.0.2.2", "2001:db8:0:1::2", "203.0.113.1", "2001:db8:0:b::1")


def _configure_site(
    namespace: Namespace, identity: str, addresses: tuple[str, ...]
) -> Site:
    outer4, outer6, inner4, inner6 = addresses
    site = Site(namespace, identity, "veth0", outer4, outer6, inner4, inner6)
    namespace.ip("addr", "add", f"{outer4}/24", "dev", site.link)
    # nodad: the address is usable at once, no duplicate detection wait
    namespace.ip("addr", "add", f"{outer6}/64", "dev", site.link, "nodad")
    namespace.ip("addr", "add", f"{inner4}/32", "dev", "lo")
    namespace.ip("addr", "add", f"{inner6}/128", "dev", "lo")
    namespace.ip("link", "set", site.link, "up")
    return site


def create_site_pair(prefix: str = "qsgw-iop") -> SitePair:
    """Two fresh namespaces joined by veth, addressed as in SitePair."""
    left = create_namespace(f"{prefix}-l")
    try:
        right = create_namespace(f"{prefix}-r")
    except Exception:
        delete_namespace(left)
        raise
    try:
        # both ends are created directly inside the namespaces: no host link
        veth = ["ip", "link", "add", "veth0", "netns", left.name, "type", "veth"]
        run([*veth, "peer", "name", "veth0", "netns", right.name])
        pair = SitePair(
            _configure_site(left, "left.example", LEFT_ADDRESSES),
            _configure_site(right, "right.example", RIGHT_ADDRESSES),
        )
    except Exception:
        delete_namespace(left)
        delete_namespace(right)
        raise
    return pair
