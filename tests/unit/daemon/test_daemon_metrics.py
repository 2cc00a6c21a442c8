"""Metrics counted from IKE events and read from SA snapshots at scrape."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from qsgw.ike.events import (
    ExchangeCompleted,
    IkeSaEstablished,
    MessageRejected,
    MessageSent,
)
from qsgw.metrics.gateway import ChildSaTraffic, GatewayMetrics, Snapshot
from qsgw.metrics.http import serve_metrics


def samples(
    metrics: GatewayMetrics,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def gateway_metrics(snapshot: Snapshot | None = None) -> GatewayMetrics:
    return GatewayMetrics(
        lambda: snapshot or Snapshot(), version="0.1.0", data_plane="recording"
    )


def test_handshake_duration_lands_in_histogram_by_role() -> None:
    metrics = gateway_metrics()

    metrics.observe(IkeSaEstablished(1, "site", initiator=True, duration=0.02))

    values = samples(metrics)
    role = (("role", "initiator"),)
    assert values[("qsgw_ike_handshake_duration_seconds_count", role)] == 1
    assert values[("qsgw_ike_handshake_duration_seconds_sum", role)] == 0.02
    established = (("connection", "site"), ("role", "initiator"))
    assert values[("qsgw_ike_sas_established_total", established)] == 1


def test_exchanges_messages_and_rejects_are_counted_with_labels() -> None:
    metrics = gateway_metrics()

    metrics.observe(ExchangeCompleted("IKE_AUTH", initiator=False, duration=0.0))
    metrics.observe(MessageSent("IKE_SA_INIT", response=True))
    metrics.observe(MessageRejected("icv", "IKE_AUTH"))
    metrics.observe(MessageRejected("icv"))

    values = samples(metrics)
    exchange = (("exchange", "IKE_AUTH"), ("role", "responder"))
    assert values[("qsgw_ike_exchanges_total", exchange)] == 1
    sent = (("exchange", "IKE_SA_INIT"), ("kind", "response"))
    assert values[("qsgw_ike_messages_sent_total", sent)] == 1
    assert values[("qsgw_ike_messages_rejected_total", (("reason", "icv"),))] == 2


def test_snapshot_gauges_and_traffic_are_read_at_scrape() -> None:
    traffic = [ChildSaTraffic("site", "net", 0xC0000001, "in", 1500, 3)]
    metrics = gateway_metrics(Snapshot({"established": 2}, {"installed": 1}, traffic))

    values = samples(metrics)

    assert values[("qsgw_ike_sas", (("state", "established"),))] == 2
    assert values[("qsgw_child_sas", (("state", "installed"),))] == 1
    labels = (
        ("child", "net"),
        ("connection", "site"),
        ("direction", "in"),
        ("spi", "c0000001"),
    )
    assert values[("qsgw_child_sa_bytes_total", labels)] == 1500
    assert values[("qsgw_child_sa_packets_total", labels)] == 3


def test_info_names_version_and_data_plane() -> None:
    values = samples(gateway_metrics())

    labels = (("data_plane", "recording"), ("version", "0.1.0"))
    assert values[("qsgw_info", labels)] == 1


async def _scrape(metrics: GatewayMetrics, path: str) -> bytes:
    server = await serve_metrics(metrics, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        return answer
    finally:
        server.close()
        await server.wait_closed()


def test_http_endpoint_serves_exposition_on_metrics_path() -> None:
    metrics = gateway_metrics()

    answer = asyncio.run(_scrape(metrics, "/metrics"))

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"qsgw_info{" in body


def test_http_endpoint_answers_404_elsewhere() -> None:
    answer = asyncio.run(_scrape(gateway_metrics(), "/secrets"))

    assert answer.startswith(b"HTTP/1.1 404 Not Found")
