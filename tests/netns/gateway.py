"""A UserspaceBackend in its own process, driven over stdin/stdout.

Run inside a namespace as `gateway.py CONFIG_JSON`; then each input line is
a JSON command ({"op": ..., ...}) and each output line a JSON reply. Used
by the netns tests and the throughput benchmark; keys travel only through
the pipe and are never printed.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import traceback
from dataclasses import asdict
from ipaddress import ip_address, ip_network
from typing import Any

from qsgw.esp.backend import (
    BackendEvent,
    Direction,
    EspAlgorithm,
    EspIntegrity,
    Lifetime,
    PolicySpec,
    SaSpec,
    UdpEncapsulation,
)
from qsgw.esp.userspace import Endpoint, UserspaceBackend


def sa_from_json(data: dict[str, Any]) -> SaSpec:
    encapsulation = data.get("encapsulation")
    return SaSpec(
        spi=data["spi"],
        direction=Direction(data["direction"]),
        source=ip_address(data["source"]),
        destination=ip_address(data["destination"]),
        algorithm=EspAlgorithm(data["algorithm"]),
        encryption_key=bytes.fromhex(data["encryption_key"]),
        key_bits=data["key_bits"],
        integrity=EspIntegrity(data.get("integrity", "none")),
        integrity_key=bytes.fromhex(data.get("integrity_key", "")),
        esn=data.get("esn", True),
        replay_window=data.get("replay_window", 128),
        encapsulation=UdpEncapsulation(*encapsulation) if encapsulation else None,
        lifetime=Lifetime(**data.get("lifetime", {})),
        reqid=data["reqid"],
    )


def policy_from_json(data: dict[str, Any]) -> PolicySpec:
    return PolicySpec(
        direction=Direction(data["direction"]),
        local=ip_network(data["local"]),
        remote=ip_network(data["remote"]),
        tunnel_source=ip_address(data["tunnel_source"]),
        tunnel_destination=ip_address(data["tunnel_destination"]),
        reqid=data["reqid"],
    )


class Shell:
    """What the daemon does with port 4500 when it owns it: IKE (after the
    non-ESP marker) stays here, every other datagram goes to the backend."""

    def __init__(self) -> None:
        self.ike: list[str] = []
        self.sockets = {}
        for family, address in ((socket.AF_INET, ""), (socket.AF_INET6, "::")):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address, 4500))
            self.sockets[family] = sock

    def send(self, datagram: bytes, source: Endpoint, destination: Endpoint) -> None:
        family = socket.AF_INET6 if ":" in destination[0] else socket.AF_INET
        self.sockets[family].sendto(datagram, destination)

    def serve(self, backend: UserspaceBackend) -> None:
        for sock in self.sockets.values():
            thread = threading.Thread(
                target=self._receive, args=(sock, backend), daemon=True
            )
            thread.start()

    def _receive(self, sock: socket.socket, backend: UserspaceBackend) -> None:
        local = sock.getsockname()[:2]
        while True:
            datagram, source = sock.recvfrom(65535)
            if datagram[:4] == bytes(4):
                self.ike.append(datagram[4:].hex())
            elif datagram != b"\xff":
                backend.receive_esp(datagram, source[:2], local)


class Driver:
    def __init__(self, config: dict[str, Any]) -> None:
        self.events: list[dict[str, Any]] = []
        self.ike: list[str] = []
        self.shell = Shell() if config.get("shell_owns_port") else None
        self.backend = UserspaceBackend(
            tun_name=config.get("tun", "qsgw0"),
            mtu=config.get("mtu", 1400),
            raw_esp=config.get("raw_esp", False),
            udp_port=None if self.shell else 4500,
            datagram_sender=self.shell.send if self.shell else None,
            ike_receiver=self._ike,
        )
        self.backend.start(self._event)
        if self.shell:
            self.shell.serve(self.backend)

    def _ike(self, message: bytes, source: Endpoint, destination: Endpoint) -> None:
        self.ike.append(message.hex())

    def _event(self, event: BackendEvent) -> None:
        self.events.append(
            {"kind": event.kind.value, "spi": event.spi, "reqid": event.reqid}
        )

    def handle(self, command: dict[str, Any]) -> Any:
        op = command["op"]
        backend = self.backend
        if op == "add_sa":
            backend.add_sa(sa_from_json(command["sa"]))
        elif op == "update_sa":
            backend.update_sa(sa_from_json(command["sa"]))
        elif op == "delete_sa":
            backend.delete_sa(command["spi"], ip_address(command["destination"]))
        elif op == "add_policy":
            backend.add_policy(policy_from_json(command["policy"]))
        elif op == "install_route":
            remote, source = ip_network(command["remote"]), command["source"]
            backend.install_route(remote, ip_address(source), 0)
        elif op == "counters":
            destination = ip_address(command["destination"])
            return asdict(backend.counters(command["spi"], destination))
        elif op == "drops":
            return asdict(backend.drops)
        elif op == "offloads":
            return asdict(backend.offloads)
        elif op == "events":
            return self.events
        elif op == "ike":
            return self.shell.ike if self.shell else self.ike
        else:
            raise ValueError(f"unknown op {op!r}")
        return None


def main() -> None:
    driver = Driver(json.loads(sys.argv[1]))
    print(json.dumps({"ok": True, "result": "ready"}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "quit":
            break
        try:
            reply = {"ok": True, "result": driver.handle(command)}
        except Exception as error:  # report, keep serving
            detail = "".join(traceback.format_exception_only(error)).strip()
            reply = {"ok": False, "error": detail}
        print(json.dumps(reply), flush=True)
    driver.backend.close()


if __name__ == "__main__":
    main()
