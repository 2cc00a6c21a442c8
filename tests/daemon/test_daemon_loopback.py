"""Two daemons on loopback bring up, show, rekey, reload and tear down SAs."""

from __future__ import annotations

import json
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest

from qsgw.daemon.control import MAX_REQUEST, CommandError, DaemonUnreachable, Session

from .conftest import WAIT, Pair, connection


def established(sas: list[dict[str, Any]]) -> bool:
    return bool(sas) and all(
        sa["state"] == "ESTABLISHED" and sa["children"] for sa in sas
    )


def only(sas: list[dict[str, Any]], connection: str = "site") -> dict[str, Any]:
    (sa,) = [s for s in sas if s["connection"] == connection]
    return sa


def assert_sas_match(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert (a["spi_i"], a["spi_r"]) == (b["spi_i"], b["spi_r"])
    assert a["algorithms"] == b["algorithms"]
    assert a["ppk"] == b["ppk"]
    assert a["initiator"] != b["initiator"]
    (child_a,) = a["children"]
    (child_b,) = b["children"]
    assert child_a["inbound_spi"] == child_b["outbound_spi"]
    assert child_a["outbound_spi"] == child_b["inbound_spi"]
    assert child_a["algorithms"] == child_b["algorithms"]
    assert child_a["local_ts"] == child_b["remote_ts"]


def test_psk_initiate_brings_up_matching_ike_and_child_sa(pair: Pair) -> None:
    pair.configure(hybrid=False)
    pair.start()

    result = pair.a.cli("initiate", "--conn", "site", "--child", "net")

    assert result.returncode == 0, result.stderr
    assert "established" in result.stdout
    a = only(pair.a.wait_for(established, "IKE SA"))
    b = only(pair.b.wait_for(established, "IKE SA"))
    assert_sas_match(a, b)
    assert a["ppk"] is False
    assert a["algorithms"]["ke"] == "x25519" and "ke1" not in a["algorithms"]
    assert (a["local_id"], a["remote_id"]) == ("a0.example.org", "b0.example.org")


def configure_two_children(pair: Pair, *, b_knows_db: bool = True) -> None:
    """`site` with children `net` and `db` on a; b has `db` only if asked."""
    port = pair.a.port
    a_ids = ("a0.example.org", "b0.example.org")
    b_ids = ("b0.example.org", "a0.example.org")
    nets = ("10.0.1.0/24", "10.0.2.0/24")
    a_conn = connection("127.0.0.1", "127.0.0.2", port, *a_ids, *nets, hybrid=False)
    b_conn = connection(
        "127.0.0.2", "127.0.0.1", port, *b_ids, *reversed(nets), hybrid=False
    )
    db = {"local_ts": ["10.5.1.0/24"], "remote_ts": ["10.5.2.0/24"]}
    a_conn["children"]["db"] = {**a_conn["children"]["net"], **db}
    if b_knows_db:
        reverse = {"local_ts": db["remote_ts"], "remote_ts": db["local_ts"]}
        b_conn["children"]["db"] = {**b_conn["children"]["net"], **reverse}
    pair.a.write_config({"site": a_conn})
    pair.b.write_config({"site": b_conn})


def two_children(sas: list[dict[str, Any]]) -> bool:
    return any(len(sa["children"]) == 2 for sa in sas)


def child_names(sa: dict[str, Any]) -> list[str]:
    return sorted(child["name"] for child in sa["children"])


def test_initiate_of_another_child_reuses_the_established_ike_sa(
    pair: Pair,
) -> None:
    configure_two_children(pair)
    pair.start()

    first = pair.a.cli("initiate", "--conn", "site", "--child", "net")
    second = pair.a.cli("initiate", "--conn", "site", "--child", "db")

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "Child SA db" in second.stdout and "established" in second.stdout
    # one IKE SA on each side, carrying both Child SAs (CREATE_CHILD_SA)
    a = only(pair.a.wait_for(two_children, "Child SA db on a"))
    b = only(pair.b.wait_for(two_children, "Child SA db on b"))
    assert child_names(a) == child_names(b) == ["db", "net"]
    assert (a["spi_i"], a["spi_r"]) == (b["spi_i"], b["spi_r"])


def test_initiate_of_a_child_the_peer_refuses_fails_and_keeps_the_ike_sa(
    pair: Pair,
) -> None:
    configure_two_children(pair, b_knows_db=False)
    pair.start()
    pair.a.cli("initiate", "--conn", "site", "--child", "net")

    refused = pair.a.cli("initiate", "--conn", "site", "--child", "db")

    assert refused.returncode != 0
    assert "Child SA db" in refused.stderr and "failed" in refused.stderr
    a = only(pair.a.sas())
    assert a["state"] == "ESTABLISHED" and child_names(a) == ["net"]


def test_hybrid_mlkem_ppk_comes_up_on_start_action(pair: Pair) -> None:
    pair.configure(hybrid=True, start=True)
    pair.start()

    a = only(pair.a.wait_for(established, "IKE SA"))
    b = only(pair.b.wait_for(established, "IKE SA"))

    assert_sas_match(a, b)
    assert a["ppk"] is True and b["ppk"] is True
    assert a["algorithms"]["ke"] == "x25519"
    assert a["algorithms"]["ke1"] == "mlkem768"


def test_text_listing_shows_spis_algorithms_and_ppk(pair: Pair) -> None:
    pair.configure(hybrid=True, start=True)
    pair.start()
    a = only(pair.a.wait_for(established, "IKE SA"))

    text = pair.a.cli("sas").stdout

    assert f"{a['spi_i']}_i* {a['spi_r']}_r" in text
    assert "ke1=mlkem768" in text and "ppk: yes" in text
    assert a["children"][0]["inbound_spi"] + "_i" in text


def test_terminate_deletes_the_ike_sa_on_both_sides(pair: Pair) -> None:
    pair.configure(hybrid=False, start=True)
    pair.start()
    a = only(pair.a.wait_for(established, "IKE SA"))

    result = pair.a.cli("terminate", "--ike", str(a["unique_id"]))

    assert result.returncode == 0, result.stderr
    assert f"IKE SA #{a['unique_id']} deleted" in result.stdout
    pair.a.wait_for(lambda sas: not sas, "deletion")
    pair.b.wait_for(lambda sas: not sas, "deletion at the peer")


def test_terminate_by_connection_name(pair: Pair) -> None:
    pair.configure(hybrid=False, start=True)
    pair.start()
    pair.a.wait_for(established, "IKE SA")

    result = pair.b.cli("terminate", "--conn", "site")

    assert result.returncode == 0, result.stderr
    pair.a.wait_for(lambda sas: not sas, "deletion at the peer")


def test_commands_on_unknown_names_fail_with_exit_code_1(pair: Pair) -> None:
    pair.configure(hybrid=False)
    pair.a.start()

    initiate = pair.a.cli("initiate", "--conn", "nowhere")
    terminate = pair.a.cli("terminate", "--ike", "99")
    rekey = pair.a.cli("rekey", "--child", "99")

    assert (initiate.returncode, initiate.stderr) == (
        1,
        "qsgw: no connection named 'nowhere'\n",
    )
    assert (terminate.returncode, terminate.stderr) == (1, "qsgw: no IKE SA #99\n")
    assert (rekey.returncode, rekey.stderr) == (1, "qsgw: no Child SA #99\n")


def test_rekey_child_replaces_spis_on_both_sides(pair: Pair) -> None:
    pair.configure(hybrid=True, start=True)
    pair.start()
    a = only(pair.a.wait_for(established, "IKE SA"))
    old = a["children"][0]

    result = pair.a.cli("rekey", "--child", str(old["unique_id"]))

    assert result.returncode == 0, result.stderr

    def rekeyed(sas: list[dict[str, Any]]) -> bool:
        children = only(sas)["children"]
        return len(children) == 1 and children[0]["inbound_spi"] != old["inbound_spi"]

    a = only(pair.a.wait_for(rekeyed, "Child SA rekey"))
    b = only(pair.b.wait_for(lambda sas: len(only(sas)["children"]) == 1, "rekey"))
    assert_sas_match(a, b)
    assert a["children"][0]["algorithms"]["ke"] == "x25519"


def test_rekey_ike_keeps_the_child_sa(pair: Pair) -> None:
    pair.configure(hybrid=True, start=True)
    pair.start()
    a = only(pair.a.wait_for(established, "IKE SA"))

    result = pair.a.cli("rekey", "--ike", str(a["unique_id"]))

    assert result.returncode == 0, result.stderr

    def rekeyed(sas: list[dict[str, Any]]) -> bool:
        return len(sas) == 1 and sas[0]["spi_i"] != a["spi_i"] and established(sas)

    new_a = only(pair.a.wait_for(rekeyed, "IKE SA rekey"))
    new_b = only(pair.b.wait_for(rekeyed, "IKE SA rekey"))
    assert_sas_match(new_a, new_b)
    assert new_a["children"][0]["inbound_spi"] == a["children"][0]["inbound_spi"]


def test_reload_keeps_sas_of_unchanged_connections(pair: Pair) -> None:
    pair.configure(hybrid=False, start=True, extra=1)
    pair.start()
    before = pair.a.wait_for(lambda s: len(s) == 2 and established(s), "two SAs")
    kept = only(before, "site")
    changed = only(before, "site-1")
    document = json.loads(json.dumps(_yaml(pair.a.config)))
    document["connections"]["site-1"]["dpd_delay"] = "10s"
    pair.a.config.write_text(_dump(document))

    result = pair.a.cli("reload")

    assert result.returncode == 0, result.stderr
    assert "2 connections (0 added, 1 changed, 0 removed)" in result.stdout

    def renewed(sas: list[dict[str, Any]]) -> bool:
        ids = {sa["connection"]: sa["unique_id"] for sa in sas}
        return (
            established(sas)
            and ids.get("site-1", changed["unique_id"]) != (changed["unique_id"])
        )

    after = pair.a.wait_for(renewed, "re-initiation of the changed connection")
    assert only(after, "site")["unique_id"] == kept["unique_id"]
    assert only(after, "site")["spi_i"] == kept["spi_i"]


def test_sighup_with_broken_file_keeps_old_config_and_sas(pair: Pair) -> None:
    pair.configure(hybrid=False, start=True)
    pair.start()
    a = only(pair.a.wait_for(established, "IKE SA"))
    pair.a.config.write_text("connections:\n  site: [unclosed\n")

    pair.a.signal(signal.SIGHUP)

    deadline = time.monotonic() + WAIT
    while "reload refused" not in pair.a.log.read_text():
        assert time.monotonic() < deadline, "SIGHUP reload was not refused"
        time.sleep(0.05)
    conns = pair.a.request("conns")
    assert [c["name"] for c in conns] == ["site"]
    assert only(pair.a.sas())["unique_id"] == a["unique_id"]
    result = pair.a.cli("reload")
    assert result.returncode == 1
    assert "reload refused, old configuration kept" in result.stderr
    assert "a.yaml:3:1: invalid YAML" in result.stderr


def test_sigterm_deletes_sas_at_the_peer(pair: Pair) -> None:
    pair.configure(hybrid=False, start=True)
    pair.start()
    pair.a.wait_for(established, "IKE SA")
    pair.b.wait_for(established, "IKE SA")

    code = pair.a.stop()

    assert code == 0
    pair.b.wait_for(lambda sas: not sas, "deletion at the peer")
    assert not pair.a.socket.exists()


def test_metrics_endpoint_counts_established_sas(pair: Pair) -> None:
    pair.configure(hybrid=True, start=True)
    metrics_port = _free_tcp_port()
    document = _yaml(pair.a.config)
    document["gateway"]["metrics"] = {"address": "127.0.0.1", "port": metrics_port}
    pair.a.config.write_text(_dump(document))
    pair.start()
    pair.a.wait_for(established, "IKE SA")

    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        text = response.read().decode()

    assert 'qsgw_ike_sas{state="established"} 1.0' in text
    assert 'qsgw_ike_handshake_duration_seconds_count{role="initiator"} 1.0' in text
    assert 'qsgw_child_sa_bytes_total{child="net",connection="site"' in text


def test_control_socket_is_private_and_answers_bad_requests(pair: Pair) -> None:
    pair.configure(hybrid=False)
    pair.a.start()

    mode = stat.S_IMODE(pair.a.socket.stat().st_mode)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(WAIT)
        client.connect(str(pair.a.socket))
        client.sendall(b"not json\n" + b'{"command": "fly"}\n')
        replies = client.makefile()
        answers = replies.readline(), replies.readline()

    assert mode == 0o600
    assert json.loads(answers[0]) == {
        "ok": False,
        "error": "a request is one line of JSON",
    }
    assert json.loads(answers[1]) == {"ok": False, "error": "unknown command 'fly'"}


def test_control_socket_drops_a_too_long_request_and_keeps_serving(
    pair: Pair,
) -> None:
    pair.configure(hybrid=False)
    pair.a.start()

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(WAIT)
        client.connect(str(pair.a.socket))
        client.sendall(b'{"command": "sas", "pad": "' + b"x" * MAX_REQUEST)
        try:
            answer = client.recv(4096)
        except ConnectionResetError:  # closed with our octets unread
            answer = b""

    assert answer == b""
    assert pair.a.sas() == []


def test_one_session_carries_many_commands_and_says_when_the_daemon_goes(
    pair: Pair,
) -> None:
    pair.configure(hybrid=False)
    pair.b.start()
    pair.a.start()

    with Session(pair.a.socket, timeout=WAIT) as session:
        initiated = session.request("initiate", {"conn": "site", "wait": WAIT})
        listed = session.request("sas")
        with pytest.raises(CommandError, match="unknown command 'fly'"):
            session.request("fly")
        terminated = session.request("terminate", {"conn": "site", "wait": WAIT})
        after = session.request("sas")
        pair.a.stop()
        with pytest.raises(DaemonUnreachable):
            session.request("sas")

    assert "established" in initiated
    assert [sa["state"] for sa in listed] == ["ESTABLISHED"]
    assert "deleted" in terminated
    assert after == []


def test_second_daemon_on_the_same_socket_refuses_to_start(pair: Pair) -> None:
    pair.configure(hybrid=False)
    pair.a.start()

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "qsgw.daemon.cli",
            "--socket",
            str(pair.a.socket),
            "run",
            "--foreground",
            "--config",
            str(pair.b.config),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 1
    assert "another daemon is listening on" in result.stderr


def test_status_reports_version_and_data_plane(pair: Pair) -> None:
    pair.configure(hybrid=False)
    pair.a.start()

    status = json.loads(pair.a.cli("status", "--json").stdout)

    assert status["data_plane"] == "recording"
    assert status["version"] == "0.1.0"
    assert status["connections"] == 1


def test_cli_without_daemon_says_so_and_exits_3(pair: Pair) -> None:
    result = pair.a.cli("sas")

    assert result.returncode == 3
    assert result.stderr == (
        f"qsgw: cannot reach the daemon at {pair.a.socket}: is `qsgw run` started?\n"
    )


def _yaml(path: Any) -> dict[str, Any]:
    import yaml

    return dict(yaml.safe_load(path.read_text()))


def _dump(document: dict[str, Any]) -> str:
    import yaml

    return str(yaml.safe_dump(document))


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_run_detach_returns_once_the_daemon_is_started(pair: Pair) -> None:
    pair.configure(hybrid=False)

    result = pair.a.cli("run", "--detach", "--config", str(pair.a.config))

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("qsgw started, pid ")
    pid = int(result.stdout.split()[-1])
    try:
        status = json.loads(pair.a.cli("status", "--json").stdout)
        assert status["pid"] == pid
    finally:
        import os

        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + WAIT
        while pair.a.socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not pair.a.socket.exists()
