"""What the metrics endpoint reads at scrape time: SA counts and traffic."""

from __future__ import annotations

import logging
from collections import Counter

from qsgw.daemon.dataplane import ChildInstaller
from qsgw.esp.backend import EspBackend
from qsgw.ike.engine import IkeEngine
from qsgw.metrics.gateway import ChildSaTraffic, Snapshot

logger = logging.getLogger(__name__)


def snapshot(
    engine: IkeEngine, installer: ChildInstaller, backend: EspBackend
) -> Snapshot:
    ike_states: Counter[str] = Counter()
    child_states: Counter[str] = Counter()
    for sa in engine.sas.values():
        ike_states[sa.state.value.lower()] += 1
        for child in sa.children.values():
            child_states[child.state.value.lower()] += 1
    return Snapshot(ike_states, child_states, _traffic(installer, backend))


def _traffic(installer: ChildInstaller, backend: EspBackend) -> list[ChildSaTraffic]:
    out = []
    for child in installer.children:
        pairs = (
            (child.inbound_spi, child.local, "in"),
            (child.outbound_spi, child.remote, "out"),
        )
        for spi, destination, direction in pairs:
            try:
                counters = backend.counters(spi, destination)
            except Exception as exc:  # an SA the data plane lost: skip it
                logger.debug("no counters for SPI %08x: %s", spi, exc)
                continue
            out.append(
                ChildSaTraffic(
                    child.connection,
                    child.child,
                    spi,
                    direction,
                    counters.bytes,
                    counters.packets,
                    counters.replay_errors,
                    counters.integrity_errors,
                )
            )
    return out
