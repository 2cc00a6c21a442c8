"""A data plane that only records what it is asked: for tests and dry runs.

`RecordingBackend` implements `EspBackend` without touching the system. It
keeps the SAs, policies and routes it was given, refuses the calls a real
data plane would refuse (a duplicate SA, deleting what is not there), hands
out unique inbound SPIs in a deterministic order, and lets a test play the
data plane's part with `emit` (soft expire, acquire) and `set_counters`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from qsgw.esp.backend import (
    BackendEvent,
    BackendEventSink,
    IPAddress,
    IPNetwork,
    PolicySpec,
    SaCounters,
    SaSpec,
)

SaKey = tuple[int, IPAddress]


class RecordingError(Exception):
    """A call that a real data plane would refuse."""


@dataclass(frozen=True, slots=True)
class RecordedCall:
    method: str
    args: tuple[object, ...]


@dataclass(frozen=True, slots=True)
class Route:
    remote: IPNetwork
    source: IPAddress
    if_id: int


class RecordingBackend:
    """An `EspBackend` that stores every call; safe to use from any thread."""

    name = "recording"

    def __init__(self, first_spi: int = 0xC0000001) -> None:
        if first_spi < 256:
            raise ValueError("SPIs below 256 are reserved (RFC 4303 §2.1)")
        self.calls: list[RecordedCall] = []
        self.sas: dict[SaKey, SaSpec] = {}
        self.policies: set[PolicySpec] = set()
        self.routes: dict[tuple[IPNetwork, int], Route] = {}
        self.started = False
        self.closed = False
        self._next_spi = first_spi
        self._counters: dict[SaKey, SaCounters] = {}
        self._sink: BackendEventSink | None = None
        self._lock = threading.Lock()

    def _record(self, method: str, *args: object) -> None:
        self.calls.append(RecordedCall(method, args))

    def start(self, events: BackendEventSink) -> None:
        with self._lock:
            self._record("start")
            self._sink = events
            self.started = True

    def close(self) -> None:
        with self._lock:
            self._record("close")
            self.closed = True

    def allocate_spi(self, source: IPAddress, destination: IPAddress) -> int:
        with self._lock:
            spi = self._next_spi
            self._next_spi = 256 if spi >= 0xFFFFFFFF else spi + 1
            self._record("allocate_spi", source, destination)
            return spi

    def add_sa(self, sa: SaSpec) -> None:
        with self._lock:
            self._record("add_sa", sa)
            key = (sa.spi, sa.destination)
            if key in self.sas:
                raise RecordingError(f"SA {sa.spi:#010x} to {sa.destination} exists")
            self.sas[key] = sa

    def update_sa(self, sa: SaSpec) -> None:
        with self._lock:
            self._record("update_sa", sa)
            key = (sa.spi, sa.destination)
            if key not in self.sas:
                raise RecordingError(f"no SA {sa.spi:#010x} to {sa.destination}")
            self.sas[key] = sa

    def delete_sa(self, spi: int, destination: IPAddress) -> None:
        with self._lock:
            self._record("delete_sa", spi, destination)
            if self.sas.pop((spi, destination), None) is None:
                raise RecordingError(f"no SA {spi:#010x} to {destination}")
            self._counters.pop((spi, destination), None)

    def add_policy(self, policy: PolicySpec) -> None:
        with self._lock:
            self._record("add_policy", policy)
            if policy in self.policies:
                raise RecordingError(f"policy exists: {policy}")
            self.policies.add(policy)

    def delete_policy(self, policy: PolicySpec) -> None:
        with self._lock:
            self._record("delete_policy", policy)
            if policy not in self.policies:
                raise RecordingError(f"no such policy: {policy}")
            self.policies.discard(policy)

    def counters(self, spi: int, destination: IPAddress) -> SaCounters:
        with self._lock:
            sa = self.sas.get((spi, destination))
            if sa is None:
                raise RecordingError(f"no SA {spi:#010x} to {destination}")
            default = SaCounters(0, 0, 0, sa.replay_window)
            return self._counters.get((spi, destination), default)

    def install_route(self, remote: IPNetwork, source: IPAddress, if_id: int) -> None:
        with self._lock:
            self._record("install_route", remote, source, if_id)
            if (remote, if_id) in self.routes:
                raise RecordingError(f"route to {remote} exists")
            self.routes[(remote, if_id)] = Route(remote, source, if_id)

    def remove_route(self, remote: IPNetwork, if_id: int) -> None:
        with self._lock:
            self._record("remove_route", remote, if_id)
            if self.routes.pop((remote, if_id), None) is None:
                raise RecordingError(f"no route to {remote}")

    # --- the test's side of the data plane -----------------------------------

    def set_counters(self, spi: int, destination: IPAddress, c: SaCounters) -> None:
        with self._lock:
            self._counters[(spi, destination)] = c

    def emit(self, event: BackendEvent) -> None:
        """Deliver an event as the data plane would (soft expire, acquire...)."""
        sink = self._sink
        if sink is None:
            raise RecordingError("emit before start")
        sink(event)

    def methods(self) -> list[str]:
        """The names of the calls made so far, in order."""
        with self._lock:
            return [call.method for call in self.calls]
