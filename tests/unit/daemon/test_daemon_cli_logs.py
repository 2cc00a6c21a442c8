"""The CLI's answers without a daemon, and the log formats."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from ipaddress import IPv6Address
from pathlib import Path

import pytest

from qsgw.daemon import cli, logs
from qsgw.daemon.logs import JsonFormatter, SaLogger
from qsgw.daemon.transport import Endpoint, UdpEndpoint


def test_check_reports_a_bad_file_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text("connections: {}\ngateway: {data_plane: dpdk}\n")

    code = cli.main(["check", "--config", str(config)])

    assert code == 2
    assert capsys.readouterr().err == (
        f"qsgw: {config}: gateway.data_plane: Input should be 'auto', 'kernel', "
        "'userspace' or 'recording'\n"
    )


def test_check_accepts_a_good_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text("connections: {}\n")

    assert cli.main(["check", "--config", str(config)]) == 0
    assert capsys.readouterr().out == f"{config}: 0 connections, valid\n"


def test_run_with_a_bad_file_exits_2_before_opening_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["run", "--config", str(tmp_path / "absent.yaml")])

    assert code == 2
    assert "cannot read: No such file or directory" in capsys.readouterr().err


def test_unreachable_daemon_exits_3_with_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "qsgw.sock"

    code = cli.main(["--socket", str(path), "status"])

    assert code == 3
    assert capsys.readouterr().err == (
        f"qsgw: cannot reach the daemon at {path}: is `qsgw run` started?\n"
    )


def test_socket_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("QSGW_SOCKET", str(tmp_path / "env.sock"))

    cli.main(["sas"])

    assert f"{tmp_path}/env.sock" in capsys.readouterr().err


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(
        "qsgw.test", logging.INFO, __file__, 1, message, args, None
    )


def test_json_log_line_carries_level_message_and_sa_fields() -> None:
    entry = record("IKE SA %s", "established")
    entry.connection = "site"
    entry.ike_sa = 7

    line = json.loads(JsonFormatter().format(entry))

    assert line["level"] == "info"
    assert line["message"] == "IKE SA established"
    assert (line["connection"], line["ike_sa"]) == ("site", 7)
    assert line["time"].endswith("Z")


def test_sa_logger_prefixes_connection_and_id(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    SaLogger(logging.getLogger("qsgw.test"), "site", 3).info("up in %d ms", 12)

    (entry,) = caplog.records
    assert entry.getMessage() == "[site|#3] up in 12 ms"
    assert entry.ike_sa == 3  # type: ignore[attr-defined]


def test_ipv6_wildcard_socket_learns_the_local_address() -> None:
    try:
        endpoint = UdpEndpoint(IPv6Address("::"), 0, natt=False)
    except OSError:
        pytest.skip("no IPv6 on this machine")
    peer = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        peer.bind(("::1", 0))
        peer.sendto(b"hello", ("::1", endpoint.port))
        deadline = time.monotonic() + 5
        received: list[tuple[bytes, Endpoint, Endpoint]] = []
        while not received and time.monotonic() < deadline:
            received = endpoint.read_burst()
            time.sleep(0.01)
    finally:
        endpoint.close()
        peer.close()

    ((data, local, remote),) = received
    assert (data, local[0], remote[0]) == (
        b"hello",
        IPv6Address("::1"),
        IPv6Address("::1"),
    )


@pytest.fixture
def daemon_log(tmp_path: Path) -> Iterator[Path]:
    """The daemon's logging set-up on a file; the test's own put back after."""
    root, qsgw = logging.getLogger(), logging.getLogger("qsgw")
    saved = (list(root.handlers), root.level, qsgw.level)
    switches = (logging.logThreads, logging.logProcesses, logging._srcfile)
    path = tmp_path / "qsgw.log"
    logs.configure("info", "text", path)
    yield path
    logs.defer_flushes(False)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    qsgw.setLevel(saved[2])
    logging.logThreads, logging.logProcesses, logging._srcfile = switches


def test_deferred_info_lines_wait_for_a_flush_or_a_warning(daemon_log: Path) -> None:
    log = logging.getLogger("qsgw.test")
    logs.defer_flushes(True)

    log.info("IKE SA established")
    assert daemon_log.read_text() == ""
    log.warning("peer is not responding")
    lines = daemon_log.read_text().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [
        "IKE SA established",
        "peer is not responding",
    ]

    log.info("IKE SA deleted")
    assert len(daemon_log.read_text().splitlines()) == 2
    logs.flush()
    assert daemon_log.read_text().splitlines()[-1].endswith(": IKE SA deleted")


def test_without_deferring_every_line_is_written_at_once(daemon_log: Path) -> None:
    logs.defer_flushes(True)
    logging.getLogger("qsgw.test").info("waiting")
    logs.defer_flushes(False)  # writes what waited
    assert daemon_log.read_text().endswith(": waiting\n")

    logging.getLogger("qsgw.test").info("at once")
    assert daemon_log.read_text().endswith(": at once\n")


def test_text_lines_carry_the_time_to_the_millisecond(daemon_log: Path) -> None:
    logging.getLogger("qsgw.test").info("first")
    logging.getLogger("qsgw.test").info("second")

    stamps = [line[:23] for line in daemon_log.read_text().splitlines()]
    for stamp in stamps:
        time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")
        assert stamp[19] == "," and stamp[20:].isdigit()
    assert stamps[0] <= stamps[1]
