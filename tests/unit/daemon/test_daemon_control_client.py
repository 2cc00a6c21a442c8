"""The control-socket client against listeners that misbehave: each way of
not answering gets its own clear error, one-shot `request` and `Session`
alike."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qsgw.daemon import control

Behaviour = Callable[[socket.socket], None]


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Callable[[Behaviour], Path]]:
    """A unix listener that treats its first connection with BEHAVIOUR."""
    servers: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def start(behaviour: Behaviour) -> Path:
        path = tmp_path / "control.sock"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        server.listen(1)
        servers.append(server)

        def serve() -> None:
            connection, _ = server.accept()
            with connection:
                connection.recv(65536)  # the request line
                behaviour(connection)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        threads.append(thread)
        return path

    yield start
    for server in servers:
        server.close()
    for thread in threads:
        thread.join(timeout=5)


def close_at_once(connection: socket.socket) -> None:
    pass


def half_a_line(connection: socket.socket) -> None:
    connection.sendall(b'{"ok": true, "res')


def stay_silent(connection: socket.socket) -> None:
    connection.recv(1)  # until the client gives up


def answer(connection: socket.socket) -> None:
    connection.sendall(b'{"ok": true, "result": 7}\n')


LONG_RESULT = [{"unique_id": n, "state": "ESTABLISHED"} for n in range(20000)]


def long_answer_in_pieces(connection: socket.socket) -> None:
    line = json.dumps({"ok": True, "result": LONG_RESULT}).encode() + b"\n"
    for start in range(0, len(line), 1000):  # many reads on the client side
        connection.sendall(line[start : start + 1000])


@pytest.mark.parametrize("behaviour", [close_at_once, half_a_line])
def test_a_connection_closed_without_a_whole_answer_means_unreachable(
    listener: Callable[[Behaviour], Path], behaviour: Behaviour
) -> None:
    path = listener(behaviour)

    with pytest.raises(control.DaemonUnreachable, match="without an answer"):
        control.request(path, "status", timeout=5.0)


def test_a_silent_daemon_is_a_timeout_not_a_hang(
    listener: Callable[[Behaviour], Path],
) -> None:
    path = listener(stay_silent)

    with pytest.raises(control.CommandError, match="did not answer in time"):
        control.request(path, "status", timeout=0.2)


def test_one_shot_request_returns_the_result(
    listener: Callable[[Behaviour], Path],
) -> None:
    path = listener(answer)

    assert control.request(path, "status", timeout=5.0) == 7


def test_no_listener_says_how_to_start_one(tmp_path: Path) -> None:
    with pytest.raises(control.DaemonUnreachable, match="is `qsgw run` started"):
        control.request(tmp_path / "absent.sock", "status")


def test_a_long_answer_arriving_in_pieces_is_read_whole(
    listener: Callable[[Behaviour], Path],
) -> None:
    path = listener(long_answer_in_pieces)

    assert control.request(path, "sas", timeout=5.0) == LONG_RESULT
