"""The demo's parts that need neither root nor namespaces."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qsgw.daemon.config import load_config
from qsgw.demo import gateways
from qsgw.demo.cleanup import Cleanup
from qsgw.demo.cli import ROOT_MESSAGE, root_problem
from qsgw.demo.report import key_exchanges, to_json
from qsgw.demo.scenario import DemoResult
from qsgw.demo.topology import new_topology
from qsgw.demo.traffic import parse_esp_counters, parse_ping
from qsgw.ike.proposals import describe
from qsgw.metrics.gateway import ChildSaTraffic, GatewayMetrics, Snapshot

NOBODY = 65534


def test_root_problem_names_what_the_demo_needs_for_a_user_other_than_root() -> None:
    assert root_problem(NOBODY) == ROOT_MESSAGE
    assert "needs root" in ROOT_MESSAGE and "sudo" in ROOT_MESSAGE
    assert root_problem(0) is None


def _as_nobody(command: list[str]) -> list[str]:
    """Run as uid 65534, keeping only the right to read the checkout and
    the virtualenv (which may sit under root's home)."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv is needed to drop root")
    caps = ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    ids = [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return [setpriv, *ids, *caps, *command]


def test_demo_run_without_root_prints_the_root_message_and_fails() -> None:
    command = _as_nobody([sys.executable, "-m", "qsgw.demo", "--json"])
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert result.stderr.strip() == ROOT_MESSAGE
    assert result.stdout == ""


def test_key_exchanges_lists_ke_then_the_additional_rounds_in_order() -> None:
    ike = {"encr": "aes256gcm16", "ke3": "mlkem1024", "ke": "x25519"}
    ike["ke1"] = "mlkem768"
    assert key_exchanges(ike) == ["x25519", "mlkem768", "mlkem1024"]


def test_secret_files_are_fresh_random_and_readable_by_owner_only(
    tmp_path: Path,
) -> None:
    psk, ppk = gateways.write_secrets(tmp_path)
    texts = [path.read_text().strip() for path in (psk, ppk)]
    for path, text in zip((psk, ppk), texts, strict=True):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert text.startswith("0x")
        assert len(bytes.fromhex(text[2:])) == gateways.SECRET_OCTETS
    assert texts[0] != texts[1]


def test_gateway_configurations_load_with_the_daemon_schema_and_require_a_ppk(
    tmp_path: Path,
) -> None:
    topology = new_topology()
    gateways.write_secrets(tmp_path)
    secrets = [(tmp_path / n).read_text().strip() for n in ("psk", "ppk")]
    for side, peer in ((topology.a, topology.b), (topology.b, topology.a)):
        document = gateways.gateway_document(side, peer, tmp_path, "userspace")
        path = tmp_path / f"{side.label}.yaml"
        path.write_text(yaml.safe_dump(document))
        assert not any(secret in path.read_text() for secret in secrets)

        config = load_config(path)
        (connection,) = config.connections
        assert connection.ppk_required and len(connection.ppks) == 1
        proposals = [describe(p) for p in connection.ike_proposals]
        assert proposals == [gateways.IKE_PROPOSAL]
        assert config.gateway.data_plane == "userspace"
        (child,) = connection.children
        assert [str(ts.network) for ts in child.local_ts] == [str(side.inner_network)]


def test_esp_counters_are_summed_by_direction_from_the_metrics_exposition() -> None:
    traffic = [
        ChildSaTraffic("demo", "net", 0x1001, "in", 4200, 42),
        ChildSaTraffic("demo", "net", 0x1002, "out", 3900, 39),
        ChildSaTraffic("demo", "net", 0x1003, "in", 100, 1),
    ]
    metrics = GatewayMetrics(
        lambda: Snapshot(traffic=traffic), version="test", data_plane="userspace"
    )
    counters = parse_esp_counters(metrics.exposition().decode())
    assert (counters.packets_in, counters.packets_out) == (43, 39)
    assert (counters.octets_in, counters.octets_out) == (4300, 3900)


def test_ping_summary_is_read_from_a_real_ping_on_loopback() -> None:
    if shutil.which("ping") is None:
        pytest.skip("ping is not installed")
    command = ["ping", "-n", "-q", "-c", "2", "-i", "0.2", "127.0.0.1"]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=20, check=False
    )
    parsed = parse_ping(result.stdout)
    assert parsed is not None
    assert (parsed.sent, parsed.received) == (2, 2)
    assert parsed.average_rtt_ms is not None


def test_json_report_of_a_failed_run_carries_the_error_and_the_cleanup() -> None:
    result = DemoResult("0123abcd", ("qsgw-demo-x-a", "qsgw-demo-x-b"), "/tmp/x")
    result.cleanup_failures = ["namespace qsgw-demo-x-b: busy"]
    document = to_json(result, "gateway A did not answer")
    assert document["ok"] is False
    assert document["error"] == "gateway A did not answer"
    assert "ike" not in document and "tunnel" not in document
    assert document["run"]["cleaned_up"] is False
    assert document["run"]["cleanup_failures"] == ["namespace qsgw-demo-x-b: busy"]


def test_cleanup_runs_every_action_newest_first_past_failures() -> None:
    done: list[str] = []
    cleanup = Cleanup()
    cleanup.push("first", lambda: done.append("first"))

    def fail() -> None:
        raise OSError("busy")

    cleanup.push("failing", fail)
    cleanup.push("last", lambda: done.append("last"))
    assert cleanup.close() == ["failing: busy"]
    assert done == ["last", "first"]


def test_demo_script_without_root_prints_the_root_message_and_fails() -> None:
    script = Path(__file__).resolve().parents[2] / "scripts" / "demo.sh"
    command = _as_nobody(["bash", str(script), "--json"])
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert result.stderr.strip() == ROOT_MESSAGE
    assert result.stdout == ""
