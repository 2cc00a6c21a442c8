"""Two gateways in one event loop on loopback, with recording data planes:
what the daemon installs, in which order, and what it leaves behind."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from qsgw.daemon.config import load_config
from qsgw.daemon.server import Gateway
from qsgw.esp.backend import BackendEvent, BackendEventKind, Direction
from qsgw.esp.recording import RecordingBackend

from .conftest import PPK_HEX, PSK, connection, free_port_pair

WAIT = 10.0


def write(directory: Path, name: str, address: str, port: int, conn: Any) -> Path:
    document = {
        "gateway": {
            "listen": [address],
            "ike_port": port,
            "natt_port": port + 1,
            "control_socket": str(directory / f"{name}.sock"),
            "data_plane": "recording",
            "shutdown_timeout": "3s",
        },
        "connections": {"site": conn},
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def gateways(tmp_path: Path, start_action: str = "start") -> tuple[Gateway, Gateway]:
    (tmp_path / "site.psk").write_text(PSK)
    (tmp_path / "ppk-1.key").write_text("0x" + PPK_HEX)
    for name in ("site.psk", "ppk-1.key"):
        os.chmod(tmp_path / name, 0o600)
    port = free_port_pair()
    a_conn = connection(
        "127.0.0.1",
        "127.0.0.2",
        port,
        "a.example.org",
        "b.example.org",
        "10.1.0.0/16",
        "10.2.0.0/16",
        hybrid=True,
    )
    a_conn["children"]["net"]["start_action"] = start_action
    b_conn = connection(
        "127.0.0.2",
        "127.0.0.1",
        port,
        "b.example.org",
        "a.example.org",
        "10.2.0.0/16",
        "10.1.0.0/16",
        hybrid=True,
    )
    a = write(tmp_path, "a", "127.0.0.1", port, a_conn)
    b = write(tmp_path, "b", "127.0.0.2", port, b_conn)
    return (
        Gateway(load_config(a), RecordingBackend(first_spi=0x1000)),
        Gateway(load_config(b), RecordingBackend(first_spi=0x2000)),
    )


def recording(gateway: Gateway) -> RecordingBackend:
    assert isinstance(gateway.backend, RecordingBackend)
    return gateway.backend


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"{what} did not happen")
        await asyncio.sleep(0.01)


def run_pair(
    tmp_path: Path,
    body: Callable[[Gateway, Gateway], Awaitable[None]],
    start_action: str = "start",
) -> tuple[Gateway, Gateway]:
    a, b = gateways(tmp_path, start_action)

    async def main() -> None:
        await b.start()
        await a.start()
        try:
            await body(a, b)
        finally:
            await a.shutdown()
            await b.shutdown()

    asyncio.run(main())
    return a, b


def installed(gateway: Gateway, count: int = 2) -> Callable[[], bool]:
    return lambda: len(recording(gateway).sas) == count


def test_child_sa_keys_land_crosswise_in_the_two_data_planes(tmp_path: Path) -> None:
    async def body(a: Gateway, b: Gateway) -> None:
        await until(installed(a), "installation on a")
        await until(installed(b), "installation on b")
        a_sas = recording(a).sas.values()
        b_sas = {sa.spi: sa for sa in recording(b).sas.values()}
        for sa in a_sas:
            twin = b_sas[sa.spi]
            assert twin.direction != sa.direction
            assert (twin.source, twin.destination) == (sa.source, sa.destination)
            assert twin.encryption_key == sa.encryption_key
        assert {p.direction for p in recording(a).policies} == {
            Direction.INBOUND,
            Direction.OUTBOUND,
        }

    run_pair(tmp_path, body)


def test_shutdown_deletes_at_the_peer_and_clears_the_data_plane(
    tmp_path: Path,
) -> None:
    async def body(a: Gateway, b: Gateway) -> None:
        await until(installed(a), "installation on a")
        await until(installed(b), "installation on b")
        await a.shutdown()
        await until(lambda: not b.engine.sas, "deletion at b")
        await until(installed(b, 0), "removal at b")

    a, _ = run_pair(tmp_path, body)

    backend = recording(a)
    assert backend.sas == {} and backend.policies == set() and backend.routes == {}
    assert backend.closed
    assert not Path(a.config.gateway.control_socket).exists()


def test_soft_expiry_rekeys_make_before_break(tmp_path: Path) -> None:
    async def body(a: Gateway, b: Gateway) -> None:
        await until(installed(a), "installation on a")
        backend = recording(a)
        inbound = next(
            sa for sa in backend.sas.values() if sa.direction == Direction.INBOUND
        )
        backend.calls.clear()

        backend.emit(BackendEvent(BackendEventKind.SOFT_EXPIRE, spi=inbound.spi))

        await until(
            lambda: (
                len(backend.sas) == 2
                and (inbound.spi, inbound.destination) not in backend.sas
            ),
            "rekey",
        )
        methods = [c.method for c in backend.calls if c.method.endswith("_sa")]
        assert methods == ["add_sa", "add_sa", "delete_sa", "delete_sa"]
        assert "delete_policy" not in backend.methods()

    run_pair(tmp_path, body)


def test_acquire_on_a_trap_policy_brings_the_child_sa_up(tmp_path: Path) -> None:
    async def body(a: Gateway, b: Gateway) -> None:
        backend = recording(a)
        (trap,) = backend.policies
        assert backend.sas == {}

        backend.emit(BackendEvent(BackendEventKind.ACQUIRE, reqid=trap.reqid))

        await until(installed(a), "installation after the acquire")
        assert trap in backend.policies

    run_pair(tmp_path, body, start_action="trap")


def test_no_secret_reaches_the_log_even_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    keys: list[bytes] = []

    async def body(a: Gateway, b: Gateway) -> None:
        await until(installed(a), "installation on a")
        keys.extend(sa.encryption_key for sa in recording(a).sas.values())
        await _list_everything(a)

    run_pair(tmp_path, body)

    text = caplog.text
    assert "IKE SA established" in text
    assert PSK not in text and PPK_HEX not in text
    for key in keys:
        assert key.hex() not in text and repr(key) not in text


async def _list_everything(self: Gateway) -> None:
    import json
    import logging

    listing = json.dumps([self.sas(), self.conns(), self.status()])
    logging.getLogger("test").debug("listing: %s", listing)


class EspRecorder(RecordingBackend):
    """A data plane that takes ESP in UDP from the shell."""

    def __init__(self) -> None:
        super().__init__()
        self.esp: list[tuple[bytes, tuple[str, int], tuple[str, int]]] = []

    def receive_esp(
        self, datagram: bytes, source: tuple[str, int], destination: tuple[str, int]
    ) -> None:
        self.esp.append((datagram, source, destination))


def test_esp_in_udp_on_the_natt_port_goes_to_the_data_plane(tmp_path: Path) -> None:
    import socket

    from qsgw.daemon.dataplane import UdpSender

    a, _ = gateways(tmp_path, start_action="none")
    backend = EspRecorder()
    sender = UdpSender()
    gateway = Gateway(a.config, backend, esp_sender=sender)
    natt = gateway.config.gateway.natt_port
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.2", 0))
    peer.settimeout(WAIT)
    peer_address = peer.getsockname()
    esp = b"\x00\x00\x10\x01" + bytes(28)

    async def main() -> None:
        await gateway.start()
        try:
            peer.sendto(b"\xff", ("127.0.0.1", natt))  # a NAT keepalive
            peer.sendto(esp, ("127.0.0.1", natt))
            await until(lambda: bool(backend.esp), "ESP delivery")
            sender(b"esp-out", ("127.0.0.1", natt), peer_address)
            answer = await asyncio.to_thread(peer.recvfrom, 100)
            assert answer == (b"esp-out", ("127.0.0.1", natt))
        finally:
            await gateway.shutdown()

    try:
        asyncio.run(main())
    finally:
        peer.close()

    assert backend.esp == [(esp, peer_address, ("127.0.0.1", natt))]


def test_sas_listing_shows_what_the_data_plane_counted(tmp_path: Path) -> None:
    from qsgw.esp.backend import SaCounters

    async def body(a: Gateway, b: Gateway) -> None:
        await until(installed(a), "installation on a")
        data_plane = recording(a)
        for sa in list(data_plane.sas.values()):
            inbound = sa.direction is Direction.INBOUND
            counted = SaCounters(
                bytes=1000 if inbound else 2000,
                packets=10 if inbound else 20,
                sequence=0,
                replay_window=sa.replay_window,
            )
            data_plane.set_counters(sa.spi, sa.destination, counted)
        (child,) = a.sas()[0]["children"]
        assert (child["bytes_in"], child["packets_in"]) == (1000, 10)
        assert (child["bytes_out"], child["packets_out"]) == (2000, 20)

    run_pair(tmp_path, body)


def test_a_watched_configuration_file_reloads_when_it_changes(tmp_path: Path) -> None:
    a, _ = gateways(tmp_path)
    path = a.config.source
    document = yaml.safe_load(path.read_text())
    document["gateway"]["watch_config"] = "1s"
    path.write_text(yaml.safe_dump(document))
    a = Gateway(load_config(path), RecordingBackend())

    async def main() -> None:
        await a.start()
        try:
            assert [c["name"] for c in a.conns()] == ["site"]
            # a ConfigMap update: the file is replaced, not edited
            changed = dict(document)
            changed["connections"] = {
                "site": document["connections"]["site"],
                "other": {
                    **document["connections"]["site"],
                    "remote_addrs": ["127.0.0.9"],
                },
            }
            staged = path.with_suffix(".new")
            staged.write_text(yaml.safe_dump(changed))
            staged.replace(path)
            await until(lambda: len(a.conns()) == 2, "the reload")
            assert sorted(c["name"] for c in a.conns()) == ["other", "site"]
        finally:
            await a.shutdown()

    asyncio.run(main())


def test_start_children_of_one_connection_share_one_ike_sa(tmp_path: Path) -> None:
    a, b = gateways(tmp_path)
    for gateway, (local, remote) in (
        (a, ("10.3.0.0/16", "10.4.0.0/16")),
        (b, ("10.4.0.0/16", "10.3.0.0/16")),
    ):
        path = gateway.config.source
        document = yaml.safe_load(path.read_text())
        children = document["connections"]["site"]["children"]
        second = {**children["net"], "local_ts": [local], "remote_ts": [remote]}
        children["second"] = second
        path.write_text(yaml.safe_dump(document))
    a = Gateway(load_config(a.config.source), RecordingBackend(first_spi=0x1000))
    b = Gateway(load_config(b.config.source), RecordingBackend(first_spi=0x2000))

    async def main() -> None:
        await b.start()
        await a.start()
        try:
            # two Child SAs, four SAs in each data plane
            await until(installed(a, 4), "both children on a")
            await until(installed(b, 4), "both children on b")
            await asyncio.sleep(0.5)  # a duplicate would show up by now
            for gateway in (a, b):
                (ike_sa,) = gateway.sas()
                names = sorted(c["name"] for c in ike_sa["children"])
                assert names == ["net", "second"]
        finally:
            await a.shutdown()
            await b.shutdown()

    asyncio.run(main())


def test_key_pairs_are_made_ahead_while_idle_and_used_by_the_next_set_up(
    tmp_path: Path,
) -> None:
    x25519, ml_kem_768 = 31, 36

    async def body(a: Gateway, b: Gateway) -> None:
        await until(installed(a), "installation on a")
        # the initiator sent both KEi; the responder's ML-KEM half is Encaps
        # of a's key, which cannot be made ahead
        ahead = a.engine.settings.keys_ahead
        assert ahead > 0
        await until(
            lambda: (
                (a.engine.keys.waiting(x25519), a.engine.keys.waiting(ml_kem_768))
                == (ahead, ahead)
            ),
            "key pairs made ahead on a",
        )
        await until(lambda: b.engine.keys.waiting(x25519) == ahead, "pairs on b")
        assert b.engine.keys.waiting(ml_kem_768) == 0

        await a.terminate_connection("site", WAIT)
        assert not recording(a).sas
        await a.initiate("site", "net", WAIT)

        await until(installed(a), "the second installation on a")
        await until(installed(b), "the second installation on b")

    run_pair(tmp_path, body)


def test_a_burst_of_deletes_on_shutdown_reaches_the_peer_whole(tmp_path: Path) -> None:
    """400 IKE SAs, one INFORMATIONAL delete each, sent at once: the peer's
    IKE socket has room for the burst (the kernel's default buffer dropped
    about one in seven of 300, and those waited for a retransmission that
    the shutdown did not wait for)."""
    count = 400

    async def body(a: Gateway, b: Gateway) -> None:
        slots = asyncio.Semaphore(16)

        async def one() -> None:
            async with slots:
                await a.initiate("site", None, WAIT)

        await asyncio.gather(*(one() for _ in range(count)))
        await until(lambda: len(b.engine.sas) == count, "all IKE SAs on b")

        await a.shutdown()

        assert not a.engine.sas
        assert not b.engine.sas  # every delete arrived and was answered

    run_pair(tmp_path, body, start_action="none")
