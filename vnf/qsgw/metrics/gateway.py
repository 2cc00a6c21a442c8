"""The gateway's Prometheus metrics, fed from IKE events and SA snapshots.

`GatewayMetrics.observe(event)` counts what the IKE core reports (exchanges,
messages, rejects, rekeys, liveness failures, handshake durations). Gauges
and the per-Child SA traffic counters are read at scrape time from a
`Snapshot` the daemon provides, so that they are never stale. Labels carry
connection and child names, exchange names, reasons and SPIs: never keys.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from qsgw.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaRekeyed,
    Event,
    ExchangeCompleted,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaFailed,
    IkeSaRekeyed,
    LivenessFailed,
    MessageReceived,
    MessageRejected,
    MessageSent,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST

# IKE SA set-up over a network takes milliseconds to seconds (retransmits).
HANDSHAKE_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


@dataclass(frozen=True, slots=True)
class ChildSaTraffic:
    """Counters of one ESP SA as the data plane reports them."""

    connection: str
    child: str
    spi: int
    direction: str  # "in" | "out"
    bytes: int
    packets: int
    replay_errors: int = 0
    integrity_errors: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    ike_sas_by_state: Mapping[str, int] = field(default_factory=dict)
    child_sas_by_state: Mapping[str, int] = field(default_factory=dict)
    traffic: Sequence[ChildSaTraffic] = ()


SnapshotSource = Callable[[], Snapshot]


class CounterFamily:
    """A counter with labels, kept as plain numbers per label tuple.

    Events come several times per IKE message: an increment is one
    dictionary update, with no lock (everything counted runs on the
    daemon's event loop, as the scrapes do). The samples are made when
    Prometheus scrapes.
    """

    def __init__(self, name: str, text: str, labels: Sequence[str]) -> None:
        self.name = name
        self.text = text
        self.labels = tuple(labels)
        self.counts: dict[tuple[str, ...], float] = {}

    def inc(self, *values: str) -> None:
        counts = self.counts
        counts[values] = counts.get(values, 0) + 1

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.text, labels=self.labels)
        for values, count in sorted(self.counts.items()):
            family.add_metric(values, count)
        return family


class HistogramFamily:
    """A histogram with labels: bucket counts and a sum per label tuple."""

    def __init__(
        self, name: str, text: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name = name
        self.text = text
        self.labels = tuple(labels)
        self.bounds = tuple(buckets)
        # per label tuple: counts per bucket (the last one is +Inf), sum
        self.series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, amount: float, *values: str) -> None:
        series = self.series.get(values)
        if series is None:
            series = self.series[values] = ([0] * (len(self.bounds) + 1), [0.0])
        counts, total = series
        counts[bisect_left(self.bounds, amount)] += 1
        total[0] += amount

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.text, labels=self.labels)
        edges = [repr(float(b)) for b in self.bounds] + ["+Inf"]
        for values, (counts, total) in sorted(self.series.items()):
            cumulative = list(accumulate(counts))
            buckets = list(zip(edges, cumulative, strict=True))
            family.add_metric(values, buckets, total[0])
        return family


class GatewayMetrics:
    """All qsgw metrics in one registry of their own."""

    def __init__(
        self, snapshot: SnapshotSource, *, version: str, data_plane: str
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._define_counters()
        self._define_histograms()
        info = Gauge(
            "qsgw_info",
            "Version and data plane of this gateway",
            ["version", "data_plane"],
            registry=self.registry,
        )
        info.labels(version, data_plane).set(1)
        self.registry.register(_Collector(self, snapshot))

    def _define_counters(self) -> None:
        self.counters: list[CounterFamily] = []

        def counter(name: str, text: str, labels: Sequence[str]) -> CounterFamily:
            family = CounterFamily(name, text, labels)
            self.counters.append(family)
            return family

        self.exchanges = counter(
            "qsgw_ike_exchanges", "IKE exchanges completed", ["exchange", "role"]
        )
        self.messages_sent = counter(
            "qsgw_ike_messages_sent", "IKE messages sent", ["exchange", "kind"]
        )
        self.messages_received = counter(
            "qsgw_ike_messages_received", "IKE messages received", ["exchange", "kind"]
        )
        self.messages_rejected = counter(
            "qsgw_ike_messages_rejected",
            "IKE messages dropped or answered with an error",
            ["reason"],
        )
        self._define_sa_counters(counter)

    def _define_sa_counters(self, counter: Callable[..., CounterFamily]) -> None:
        self.ike_established = counter(
            "qsgw_ike_sas_established", "IKE SAs established", ["connection", "role"]
        )
        self.ike_failed = counter(
            "qsgw_ike_sa_failures",
            "IKE SAs that did not come up",
            ["connection", "reason"],
        )
        self.ike_deleted = counter(
            "qsgw_ike_sas_deleted", "IKE SAs deleted", ["connection", "reason"]
        )
        self.ike_rekeys = counter("qsgw_ike_sa_rekeys", "IKE SA rekeys", ["connection"])
        self.child_established = counter(
            "qsgw_child_sas_established",
            "Child SAs established",
            ["connection", "child"],
        )
        self.child_rekeys = counter(
            "qsgw_child_sa_rekeys", "Child SA rekeys", ["connection", "child"]
        )
        self.child_deleted = counter(
            "qsgw_child_sas_deleted",
            "Child SAs deleted",
            ["connection", "child", "reason"],
        )
        self.liveness_failures = counter(
            "qsgw_ike_liveness_failures",
            "Peers found dead by liveness checks",
            ["connection"],
        )
        self.reloads = counter(
            "qsgw_config_reloads", "Configuration reloads", ["result"]
        )

    def _define_histograms(self) -> None:
        self.handshake_duration = HistogramFamily(
            "qsgw_ike_handshake_duration_seconds",
            "Time from the first IKE_SA_INIT request to an established IKE SA",
            ["role"],
            HANDSHAKE_BUCKETS,
        )
        self.exchange_duration = HistogramFamily(
            "qsgw_ike_exchange_duration_seconds",
            "Time from request to response of exchanges we initiated",
            ["exchange"],
            HANDSHAKE_BUCKETS,
        )
        self.histograms = [self.handshake_duration, self.exchange_duration]

    def observe(self, event: Event) -> None:
        """Count one event from the IKE core."""
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def reload_done(self, ok: bool) -> None:
        self.reloads.inc("ok" if ok else "refused")

    def exposition(self) -> bytes:
        """The text exposition format, as served on /metrics."""
        return bytes(generate_latest(self.registry))


def _role(initiator: bool) -> str:
    return "initiator" if initiator else "responder"


def _kind(response: bool) -> str:
    return "response" if response else "request"


def _on_exchange(m: GatewayMetrics, e: ExchangeCompleted) -> None:
    m.exchanges.inc(e.exchange, _role(e.initiator))
    if e.initiator:
        m.exchange_duration.observe(e.duration, e.exchange)


def _on_sent(m: GatewayMetrics, e: MessageSent) -> None:
    m.messages_sent.inc(e.exchange, _kind(e.response))


def _on_received(m: GatewayMetrics, e: MessageReceived) -> None:
    m.messages_received.inc(e.exchange, _kind(e.response))


def _on_rejected(m: GatewayMetrics, e: MessageRejected) -> None:
    m.messages_rejected.inc(e.reason)


def _on_ike_established(m: GatewayMetrics, e: IkeSaEstablished) -> None:
    m.ike_established.inc(e.connection, _role(e.initiator))
    m.handshake_duration.observe(e.duration, _role(e.initiator))


def _on_ike_failed(m: GatewayMetrics, e: IkeSaFailed) -> None:
    m.ike_failed.inc(e.connection, e.reason)


def _on_ike_deleted(m: GatewayMetrics, e: IkeSaDeleted) -> None:
    m.ike_deleted.inc(e.connection, e.reason)


def _on_ike_rekeyed(m: GatewayMetrics, e: IkeSaRekeyed) -> None:
    m.ike_rekeys.inc(e.connection)


def _on_child_established(m: GatewayMetrics, e: ChildSaEstablished) -> None:
    m.child_established.inc(e.connection, e.child)


def _on_child_rekeyed(m: GatewayMetrics, e: ChildSaRekeyed) -> None:
    m.child_rekeys.inc(e.connection, e.child)


def _on_child_deleted(m: GatewayMetrics, e: ChildSaDeleted) -> None:
    m.child_deleted.inc(e.connection, e.child, e.reason)


def _on_liveness(m: GatewayMetrics, e: LivenessFailed) -> None:
    m.liveness_failures.inc(e.connection)


_HANDLERS: dict[type, Callable[[GatewayMetrics, object], None]] = {
    ExchangeCompleted: _on_exchange,  # type: ignore[dict-item]
    MessageSent: _on_sent,  # type: ignore[dict-item]
    MessageReceived: _on_received,  # type: ignore[dict-item]
    MessageRejected: _on_rejected,  # type: ignore[dict-item]
    IkeSaEstablished: _on_ike_established,  # type: ignore[dict-item]
    IkeSaFailed: _on_ike_failed,  # type: ignore[dict-item]
    IkeSaDeleted: _on_ike_deleted,  # type: ignore[dict-item]
    IkeSaRekeyed: _on_ike_rekeyed,  # type: ignore[dict-item]
    ChildSaEstablished: _on_child_established,  # type: ignore[dict-item]
    ChildSaRekeyed: _on_child_rekeyed,  # type: ignore[dict-item]
    ChildSaDeleted: _on_child_deleted,  # type: ignore[dict-item]
    LivenessFailed: _on_liveness,  # type: ignore[dict-item]
}


class _Collector:
    """At scrape time: the counters and histograms fed by events, then the
    gauges and data-plane counters of a snapshot."""

    def __init__(self, metrics: GatewayMetrics, snapshot: SnapshotSource) -> None:
        self._metrics = metrics
        self._snapshot = snapshot

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        for counter in self._metrics.counters:
            yield counter.family()
        for histogram in self._metrics.histograms:
            yield histogram.family()
        snapshot = self._snapshot()
        yield _by_state("qsgw_ike_sas", "IKE SAs by state", snapshot.ike_sas_by_state)
        yield _by_state(
            "qsgw_child_sas", "Child SAs by state", snapshot.child_sas_by_state
        )
        yield from _traffic(snapshot.traffic)


def _by_state(name: str, text: str, counts: Mapping[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text, labels=["state"])
    for state, count in sorted(counts.items()):
        family.add_metric([state], count)
    return family


_TRAFFIC = (
    ("qsgw_child_sa_bytes", "ESP payload octets through a Child SA", "bytes"),
    ("qsgw_child_sa_packets", "ESP packets through a Child SA", "packets"),
    ("qsgw_child_sa_replay_errors", "ESP packets dropped as replays", "replay_errors"),
    (
        "qsgw_child_sa_integrity_errors",
        "ESP packets dropped for a bad ICV",
        "integrity_errors",
    ),
)


def _traffic(traffic: Sequence[ChildSaTraffic]) -> Iterator[Metric]:
    labels = ["connection", "child", "spi", "direction"]
    for name, text, attribute in _TRAFFIC:
        family = CounterMetricFamily(name, text, labels=labels)
        for sa in traffic:
            values = [sa.connection, sa.child, f"{sa.spi:08x}", sa.direction]
            family.add_metric(values, getattr(sa, attribute))
        yield family
