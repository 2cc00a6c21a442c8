"""Network namespaces inside the test VM, and running Python code in them.

Starting a Python process under the VM's emulated CPU costs seconds, so
code runs in a forked child that enters the namespace with setns(2); the
child inherits everything the parent imported.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

from qsgw.esp.backend import BackendEvent, SaCounters
from qsgw.esp.kernel import KernelBackend

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def enter(namespace: str) -> None:
    fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {namespace}")
    finally:
        os.close(fd)


def run_in(namespace: str, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) in a forked child inside `namespace`; its result or error."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            enter(namespace)
            outcome: tuple[bool, Any] = (True, fn(*args))
        except BaseException as e:  # the parent re-raises it
            outcome = (False, repr(e))
        with os.fdopen(write_end, "wb") as f:
            pickle.dump(outcome, f)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    ok, value = pickle.loads(data)
    if not ok:
        raise RuntimeError(f"in {namespace}: {value}")
    return value


@contextlib.contextmanager
def background_in(namespace: str, fn: Callable[..., Any], *args: Any) -> Iterator[Any]:
    """fn(*args) running in a forked child inside `namespace` meanwhile.

    Yields a callable that waits for the child and returns fn's result.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            enter(namespace)
            outcome: tuple[bool, Any] = (True, fn(*args))
        except BaseException as e:
            outcome = (False, repr(e))
        with os.fdopen(write_end, "wb") as f:
            pickle.dump(outcome, f)
        os._exit(0)
    os.close(write_end)
    reaped = False

    def result() -> Any:
        nonlocal reaped
        with os.fdopen(read_end, "rb") as f:
            data = f.read()
        os.waitpid(pid, 0)
        reaped = True
        ok, value = pickle.loads(data)
        if not ok:
            raise RuntimeError(f"in {namespace}: {value}")
        return value

    try:
        yield result
    finally:
        if not reaped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
            os.waitpid(pid, 0)


def sh(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


@dataclass(frozen=True)
class Side:
    namespace: str
    outer: str
    inner: str
    inner_net: str


@dataclass(frozen=True)
class Pair:
    a: Side
    b: Side

    def delete(self) -> None:
        for side in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", side.namespace], check=False)


def make_pair(tag: str, outer_family: int, inner_family: int) -> Pair:
    """Two namespaces joined by veth, each with an inner address on lo."""
    outer = {
        4: ("192.0.2.1", "192.0.2.2", 24),
        6: ("2001:db8:1::1", "2001:db8:1::2", 64),
    }
    inner = {
        4: ("10.1.0.1", "10.2.0.1", 32, "10.1.0.0/16", "10.2.0.0/16"),
        6: ("fd00:1::1", "fd00:2::1", 128, "fd00:1::/64", "fd00:2::/64"),
    }
    oa, ob, oplen = outer[outer_family]
    ia, ib, iplen, na, nb = inner[inner_family]
    a = Side(f"{tag}a", oa, ia, na)
    b = Side(f"{tag}b", ob, ib, nb)
    for side in (a, b):
        sh("ip", "netns", "add", side.namespace)
        sh("ip", "-n", side.namespace, "link", "set", "lo", "up")
    sh("ip", "link", "add", "va", "netns", a.namespace, "type", "veth",
       "peer", "name", "vb", "netns", b.namespace)  # fmt: skip
    for side, dev in ((a, "va"), (b, "vb")):
        ns = side.namespace
        flags = ["nodad"] if ":" in side.outer else []
        sh("ip", "-n", ns, "addr", "add", f"{side.outer}/{oplen}", "dev", dev, *flags)
        sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", ns, "addr", "add", f"{side.inner}/{iplen}", "dev", "lo")
    return Pair(a, b)


def udp_receiver(address: str, port: int, expected: int, seconds: float) -> list[int]:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((address, port))
    s.settimeout(seconds)
    seen: list[int] = []
    try:
        while len(seen) < expected:
            data = s.recv(2048)
            seen.append(int.from_bytes(data[:4], "big"))
    except TimeoutError:
        pass
    return seen


def udp_sender(source: str, target: str, port: int, count: int, gap: float) -> int:
    family = socket.AF_INET6 if ":" in target else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((source, 0))
    for n in range(count):
        s.sendto(n.to_bytes(4, "big") + bytes(200), (target, port))
        time.sleep(gap)
    return count


@contextlib.contextmanager
def kernel_backend(
    events: Callable[[BackendEvent], None] | None = None,
) -> Iterator[KernelBackend]:
    """A started KernelBackend in the current namespace, closed afterwards."""
    backend = KernelBackend()
    backend.start(events or (lambda event: None))
    try:
        yield backend
    finally:
        backend.close()


def sa_counters(spi: int, destination: str) -> SaCounters:
    with kernel_backend() as backend:
        return backend.counters(spi, ip_address(destination))
