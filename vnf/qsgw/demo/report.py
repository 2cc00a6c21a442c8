"""The demo's result as JSON for scripts and as text for people."""

from __future__ import annotations

from typing import Any

from qsgw.demo.scenario import DemoResult
from qsgw.demo.traffic import EspCounters


def key_exchanges(ike: dict[str, str]) -> list[str]:
    """Every key exchange method in order: ke, then ke1..ke7 (RFC 9370)."""
    methods = [ike["ke"]] if "ke" in ike else []
    methods += [ike[f"ke{n}"] for n in range(1, 8) if f"ke{n}" in ike]
    return methods


def to_json(result: DemoResult, error: str | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {"ok": error is None}
    if error is not None:
        document["error"] = error
    document["data_plane"] = result.data_plane or None
    negotiated = result.negotiated
    if negotiated is not None:
        document["ike"] = negotiated.ike
        document["key_exchanges"] = key_exchanges(negotiated.ike)
        document["esp"] = negotiated.esp
        document["ppk"] = negotiated.ppk
        document["established_seconds"] = round(negotiated.seconds, 3)
    if result.ping is not None:
        document["ping"] = _ping_json(result)
    if result.throughput is not None:
        document["throughput"] = _throughput_json(result)
    if result.counters:
        document["tunnel"] = _tunnel_json(result.counters)
    document["run"] = _run_json(result)
    return document


def _ping_json(result: DemoResult) -> dict[str, Any]:
    assert result.ping is not None
    ping = result.ping
    return {
        "sent": ping.sent,
        "received": ping.received,
        "average_rtt_ms": ping.average_rtt_ms,
    }


def _throughput_json(result: DemoResult) -> dict[str, Any]:
    assert result.throughput is not None
    measured = result.throughput
    return {
        "tool": measured.tool,
        "protocol": measured.protocol,
        "seconds": round(measured.seconds, 3),
        "octets": measured.octets,
        "bits_per_second": round(measured.bits_per_second),
        "mbit_per_second": round(measured.bits_per_second / 1e6, 1),
    }


def _tunnel_json(counters: dict[str, EspCounters]) -> dict[str, Any]:
    per_gateway = {
        label: {
            "packets_out": c.packets_out,
            "packets_in": c.packets_in,
            "octets_out": c.octets_out,
            "octets_in": c.octets_in,
        }
        for label, c in sorted(counters.items())
    }
    return {
        "packets_sent": sum(c.packets_out for c in counters.values()),
        "packets_received": sum(c.packets_in for c in counters.values()),
        "gateways": per_gateway,
    }


def _run_json(result: DemoResult) -> dict[str, Any]:
    return {
        "id": result.run_id,
        "namespaces": list(result.namespaces),
        "gateway_pids": result.pids,
        "workdir": result.workdir,
        "cleaned_up": not result.cleanup_failures,
        "cleanup_failures": result.cleanup_failures,
    }


# --- text ----------------------------------------------------------------------


def to_text(result: DemoResult) -> str:
    lines = [f"qsgw demo (run {result.run_id}), data plane: {result.data_plane}"]
    negotiated = result.negotiated
    if negotiated is not None:
        ike, esp = negotiated.ike, negotiated.esp
        lines += [
            f"  IKE SA established in {negotiated.seconds:.3f} s",
            "  IKE:  " + _algorithms(ike, ("encr", "integ", "prf")),
            "  key exchanges: " + " + ".join(key_exchanges(ike)),
            "  PPK (RFC 8784): " + ("used" if negotiated.ppk else "NOT used"),
            "  ESP:  " + _algorithms(esp, ("encr", "integ", "esn")),
        ]
    lines += _traffic_lines(result)
    lines.append(_cleanup_line(result))
    return "\n".join(lines)


def _algorithms(names: dict[str, str], keys: tuple[str, ...]) -> str:
    shown = [f"{k}={names[k]}" for k in keys if names.get(k) not in (None, "none")]
    return ", ".join(shown) or "(none reported)"


def _traffic_lines(result: DemoResult) -> list[str]:
    lines = []
    if result.ping is not None:
        ping, rtt = result.ping, ""
        if ping.average_rtt_ms is not None:
            rtt = f", average RTT {ping.average_rtt_ms:.2f} ms"
        lines.append(f"  ping: {ping.received}/{ping.sent} replies{rtt}")
    if result.throughput is not None:
        t = result.throughput
        lines.append(
            f"  throughput ({t.tool}, {t.protocol}, {t.seconds:.1f} s): "
            f"{t.bits_per_second / 1e6:.1f} Mbit/s"
        )
    if result.counters:
        tunnel = _tunnel_json(result.counters)
        lines.append(
            f"  ESP packets through the tunnel: {tunnel['packets_sent']} sent, "
            f"{tunnel['packets_received']} received"
        )
    return lines


def _cleanup_line(result: DemoResult) -> str:
    if not result.cleanup_failures:
        return "  removed: namespaces, gateways, secrets and temporary files"
    return "  NOT removed: " + "; ".join(result.cleanup_failures)
