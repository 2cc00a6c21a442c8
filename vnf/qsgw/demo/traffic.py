"""Real traffic through the tunnel and what the gateways counted.

A ping from A's inner address to B's, then a short TCP burst (iperf3 when
installed, else the demo's own sender and receiver), then the ESP packet
counters each gateway's data plane reports on its metrics endpoint.
"""

from __future__ import annotations

import json
import re
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from qsgw.demo.cleanup import Cleanup
from qsgw.demo.topology import DemoError, Side, in_namespace, run

PING_COUNT = 5
THROUGHPUT_PORT = 5201
_PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")
_PING_RTT = re.compile(r"= [\d.]+/([\d.]+)/")
# prometheus_client adds `_total` to counter names in the exposition
_METRIC = re.compile(r"^qsgw_child_sa_(packets|bytes)(?:_total)?\{([^}]*)\}\s+(\S+)$")
_DIRECTION = re.compile(r'direction="(in|out)"')
_SERVER_TIMEOUT = 10.0
_PING_TIMEOUT = PING_COUNT * 2 + 10.0
_CLIENT_RETRIES = 20


@dataclass(frozen=True, slots=True)
class PingResult:
    sent: int
    received: int
    average_rtt_ms: float | None


@dataclass(frozen=True, slots=True)
class Throughput:
    tool: str
    protocol: str
    seconds: float
    octets: int
    bits_per_second: float


@dataclass(frozen=True, slots=True)
class EspCounters:
    packets_out: int
    packets_in: int
    octets_out: int
    octets_in: int


def ping(source: Side, target: Side) -> PingResult:
    command = ["ping", "-n", "-q", "-c", str(PING_COUNT), "-i", "0.2", "-W", "2"]
    command += ["-I", str(source.inner), str(target.inner)]
    try:
        result = subprocess.run(
            in_namespace(source.namespace, *command),
            capture_output=True,
            text=True,
            timeout=_PING_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DemoError(f"ping did not end within {_PING_TIMEOUT:g} s") from None
    parsed = parse_ping(result.stdout)
    if parsed is None:
        raise DemoError(f"ping did not run: {result.stderr.strip() or result.stdout}")
    return parsed


def parse_ping(output: str) -> PingResult | None:
    """The summary of iputils ping, or None if there is none."""
    summary = _PING_SUMMARY.search(output)
    if summary is None:
        return None
    rtt = _PING_RTT.search(output)
    average = float(rtt.group(1)) if rtt else None
    return PingResult(int(summary.group(1)), int(summary.group(2)), average)


def throughput(
    source: Side, target: Side, seconds: float, cleanup: Cleanup, tool: str = "auto"
) -> Throughput:
    """A TCP burst of `seconds` from A's inner address to B's; `tool` is
    iperf3, python (the demo's own pair) or auto (iperf3 if installed)."""
    if tool == "auto":
        tool = "iperf3" if shutil.which("iperf3") else "python"
    if tool == "iperf3":
        return _iperf3(source, target, seconds, cleanup)
    return _python_tcp(source, target, seconds, cleanup)


def _iperf3(source: Side, target: Side, seconds: float, cleanup: Cleanup) -> Throughput:
    server_command = ["iperf3", "--server", "--one-off", "--bind", str(target.inner)]
    server_command += ["--port", str(THROUGHPUT_PORT)]
    server = _spawn(target, server_command, cleanup, "iperf3 server")
    client = ["iperf3", "--client", str(target.inner), "--bind", str(source.inner)]
    client += ["--port", str(THROUGHPUT_PORT), "--time", f"{seconds:g}", "--json"]
    report = _retry_client(source, client, seconds)
    _finish(server)
    return _iperf3_result(report, seconds)


def _retry_client(source: Side, client: list[str], seconds: float) -> dict[str, Any]:
    """Run the client, retrying while the server is not listening yet."""
    last = ""
    for _ in range(_CLIENT_RETRIES):
        try:
            result = subprocess.run(
                in_namespace(source.namespace, *client),
                capture_output=True,
                text=True,
                timeout=seconds + 20,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DemoError(f"iperf3 did not end within {seconds + 20:g} s") from None
        try:
            report: dict[str, Any] = json.loads(result.stdout)
        except json.JSONDecodeError:
            report = {"error": result.stderr.strip() or "no output"}
        if "error" not in report:
            return report
        last = str(report["error"])
        time.sleep(0.25)
    raise DemoError(f"iperf3 through the tunnel failed: {last}")


def _iperf3_result(report: dict[str, Any], seconds: float) -> Throughput:
    received = report["end"]["sum_received"]
    return Throughput(
        "iperf3",
        "tcp",
        float(received.get("seconds", seconds)),
        int(received["bytes"]),
        float(received["bits_per_second"]),
    )


def _python_tcp(
    source: Side, target: Side, seconds: float, cleanup: Cleanup
) -> Throughput:
    inside = [sys.executable, "-m", "qsgw.demo.inside"]
    address, port = str(target.inner), str(THROUGHPUT_PORT)
    sink = _spawn(target, [*inside, "tcp-sink", address, port], cleanup, "TCP sink")
    _expect_line(sink, "listening")
    sender = [*inside, "tcp-source", address, port, f"{seconds:g}", str(source.inner)]
    send = in_namespace(source.namespace, *sender)
    run(send, "send through the tunnel", seconds + 20)
    output = _finish(sink)
    received = json.loads(output)
    octets, elapsed = int(received["octets"]), float(received["seconds"])
    rate = octets * 8 / elapsed if elapsed > 0 else 0.0
    return Throughput("python", "tcp", elapsed, octets, rate)


def _spawn(
    side: Side, command: list[str], cleanup: Cleanup, what: str
) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        in_namespace(side.namespace, *command),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    cleanup.push(what, lambda: _kill(process))
    return process


def _expect_line(process: subprocess.Popen[str], expected: str) -> None:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], _SERVER_TIMEOUT)
    line = process.stdout.readline().strip() if ready else ""
    if line != expected:
        raise DemoError(f"the TCP sink did not start: {line or 'no output'}")


def _finish(process: subprocess.Popen[str]) -> str:
    try:
        output, errors = process.communicate(timeout=_SERVER_TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill(process)
        raise DemoError("the traffic receiver did not finish in time") from None
    if process.returncode != 0:
        raise DemoError(f"the traffic receiver failed: {errors.strip()}")
    return output


def _kill(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(_SERVER_TIMEOUT)


def esp_counters(side: Side, port: int) -> EspCounters:
    """Packets and octets through the gateway's ESP SAs, by direction."""
    inside = [sys.executable, "-m", "qsgw.demo.inside", "metrics", str(port)]
    text = run(in_namespace(side.namespace, *inside), "read the gateway's metrics")
    return parse_esp_counters(text)


def parse_esp_counters(text: str) -> EspCounters:
    """Sum `qsgw_child_sa_packets` and `_bytes` of a Prometheus exposition
    over every Child SA, by direction."""
    totals = {("packets", "in"): 0, ("packets", "out"): 0}
    totals |= {("bytes", "in"): 0, ("bytes", "out"): 0}
    for line in text.splitlines():
        match = _METRIC.match(line)
        direction = _DIRECTION.search(match.group(2)) if match else None
        if match and direction:
            key = (match.group(1), direction.group(1))
            totals[key] += int(float(match.group(3)))
    return EspCounters(
        totals[("packets", "out")],
        totals[("packets", "in")],
        totals[("bytes", "out")],
        totals[("bytes", "in")],
    )
