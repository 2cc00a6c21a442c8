"""The demo from start to finish: build, negotiate, send, measure, remove.

`run_demo()` returns a `DemoResult` once everything it created is gone
again, or raises `DemoError` (after the same cleanup) with the step that
failed and the gateways' logs.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qsgw.demo import gateways as gw
from qsgw.demo import topology as topo
from qsgw.demo.cleanup import Cleanup
from qsgw.demo.traffic import (
    EspCounters,
    PingResult,
    Throughput,
    esp_counters,
    ping,
    throughput,
)


@dataclass(frozen=True, slots=True)
class Negotiated:
    ike: dict[str, str]  # encr, integ, prf, ke, ke1..ke7 as the daemon names them
    esp: dict[str, str]
    ppk: bool
    seconds: float  # from `initiate` to the IKE SA established


@dataclass(slots=True)
class DemoResult:
    run_id: str
    namespaces: tuple[str, str]
    workdir: str
    data_plane: str = ""
    pids: list[int] = field(default_factory=list)
    negotiated: Negotiated | None = None
    ping: PingResult | None = None
    throughput: Throughput | None = None
    counters: dict[str, EspCounters] = field(default_factory=dict)
    cleanup_failures: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    data_plane: str = "auto"
    seconds: float = 3.0
    throughput_tool: str = "auto"


def run_demo(options: DemoOptions, result: DemoResult | None = None) -> DemoResult:
    """Run the whole demo; everything is removed before this returns or
    raises. `result` is filled in as steps complete (for reports after an
    interruption)."""
    topology = topo.new_topology()
    cleanup = Cleanup()
    workdir = Path(tempfile.mkdtemp(prefix=f"qsgw-demo-{topology.run_id}-"))
    cleanup.push(f"directory {workdir}", lambda: shutil.rmtree(workdir))
    if result is None:
        result = DemoResult(topology.run_id, topology.namespaces, str(workdir))
    else:
        result.run_id, result.namespaces = topology.run_id, topology.namespaces
        result.workdir = str(workdir)
    try:
        _steps(options, topology, workdir, cleanup, result)
    finally:
        result.cleanup_failures = cleanup.close()
    return result


def _steps(
    options: DemoOptions,
    topology: topo.Topology,
    workdir: Path,
    cleanup: Cleanup,
    result: DemoResult,
) -> None:
    topo.build(topology, cleanup)
    result.data_plane = topo.choose_data_plane(options.data_plane, topology)
    a, b = gw.launch_gateways(topology, workdir, result.data_plane, cleanup)
    result.pids = [a.process.pid, b.process.pid]
    for gateway in (a, b):
        gw.wait_ready(gateway, gw.START_TIMEOUT)

    seconds = gw.establish(a, b)
    result.negotiated = _negotiated(a, b, seconds)

    result.ping = ping(topology.a, topology.b)
    if result.ping.received == 0:
        raise topo.DemoError(
            "no ping reply came back through the tunnel; gateway A's log:\n"
            f"{a.log_tail()}\ngateway B's log:\n{b.log_tail()}"
        )
    result.throughput = throughput(
        topology.a, topology.b, options.seconds, cleanup, options.throughput_tool
    )
    for gateway in (a, b):
        counters = esp_counters(gateway.side, gw.METRICS_PORT)
        result.counters[gateway.side.label] = counters


def _negotiated(a: gw.Gateway, b: gw.Gateway, seconds: float) -> Negotiated:
    sa_a, sa_b = gw.established_sa(a), gw.established_sa(b)
    children: list[dict[str, Any]] = sa_a.get("children", [])
    esp = dict(children[0].get("algorithms", {})) if children else {}
    ppk = bool(sa_a.get("ppk")) and bool(sa_b.get("ppk"))
    return Negotiated(dict(sa_a.get("algorithms", {})), esp, ppk, seconds)
