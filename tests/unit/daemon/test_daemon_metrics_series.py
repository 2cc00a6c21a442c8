"""Events with the same labels add to one series, however often they come;
different labels keep apart; histogram buckets are Prometheus's."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from qsgw.ike.events import IkeSaEstablished, MessageReceived, MessageSent
from qsgw.metrics.gateway import GatewayMetrics, Snapshot


def _value(metrics: GatewayMetrics, name: str, labels: dict[str, str]) -> float:
    text = metrics.exposition().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")


def _metrics() -> GatewayMetrics:
    return GatewayMetrics(Snapshot, version="0.1.0", data_plane="recording")


def test_repeated_events_with_the_same_labels_add_to_one_series() -> None:
    metrics = _metrics()

    for _ in range(5):
        metrics.observe(MessageSent("IKE_AUTH", response=False))
    for _ in range(3):
        metrics.observe(MessageSent("IKE_AUTH", response=True))
    metrics.observe(MessageReceived("IKE_AUTH", response=False))

    sent = "qsgw_ike_messages_sent_total"
    assert _value(metrics, sent, {"exchange": "IKE_AUTH", "kind": "request"}) == 5
    assert _value(metrics, sent, {"exchange": "IKE_AUTH", "kind": "response"}) == 3
    received = "qsgw_ike_messages_received_total"
    assert _value(metrics, received, {"exchange": "IKE_AUTH", "kind": "request"}) == 1


def test_same_label_values_on_different_metrics_stay_apart() -> None:
    metrics = _metrics()

    metrics.observe(IkeSaEstablished(1, "site", initiator=True, duration=0.5))
    metrics.observe(IkeSaEstablished(2, "site", initiator=True, duration=0.25))

    labels = {"connection": "site", "role": "initiator"}
    assert _value(metrics, "qsgw_ike_sas_established_total", labels) == 2
    histogram = "qsgw_ike_handshake_duration_seconds_sum"
    assert _value(metrics, histogram, {"role": "initiator"}) == 0.75


def test_histogram_buckets_count_up_to_and_including_their_bound() -> None:
    """Prometheus buckets are cumulative and `le` inclusive; +Inf counts all."""
    metrics = _metrics()

    for duration in (0.001, 0.0011, 0.004, 45.0):
        metrics.observe(IkeSaEstablished(1, "site", initiator=False, duration=duration))

    bucket = "qsgw_ike_handshake_duration_seconds_bucket"
    role = {"role": "responder"}
    assert _value(metrics, bucket, {**role, "le": "0.001"}) == 1
    assert _value(metrics, bucket, {**role, "le": "0.0025"}) == 2
    assert _value(metrics, bucket, {**role, "le": "0.005"}) == 3
    assert _value(metrics, bucket, {**role, "le": "30.0"}) == 3
    assert _value(metrics, bucket, {**role, "le": "+Inf"}) == 4
    count = "qsgw_ike_handshake_duration_seconds_count"
    assert _value(metrics, count, role) == 4
