"""Traffic tools run inside a namespace by the netns tests and the benchmark.

    traffic.py udp-recv ADDRESS PORT IDLE_SECONDS
    traffic.py udp-send ADDRESS PORT COUNT SIZE RATE_PPS
    traffic.py tcp-recv ADDRESS PORT
    traffic.py tcp-send ADDRESS PORT OCTETS SEED
    traffic.py capture-udp IFNAME PORT COUNT TIMEOUT
    traffic.py inject ADDRESS PORT HEX

Receivers print "ready" once bound, then one JSON line with their result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import socket
import struct
import sys
import time
from collections.abc import Callable


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def udp_recv(address: str, port: str, idle: str) -> None:
    sock = socket.socket(_family(address), socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((address, int(port)))
    sock.settimeout(float(idle))
    print("ready", flush=True)
    sequences: list[int] = []
    octets = 0
    first = last = 0.0
    try:
        while True:
            data = sock.recv(65535)
            last = time.monotonic()
            first = first or last
            sequences.append(struct.unpack_from(">Q", data)[0])
            octets += len(data)
    except TimeoutError:
        pass
    result = {
        "received": len(sequences),
        "distinct": len(set(sequences)),
        "max": max(sequences, default=-1),
        "octets": octets,
        "seconds": last - first,
    }
    print(json.dumps(result), flush=True)


def udp_send(address: str, port: str, count: str, size: str, rate: str) -> None:
    sock = socket.socket(_family(address), socket.SOCK_DGRAM)
    target = (address, int(port))
    padding = bytes(int(size) - 8)
    interval = 1.0 / float(rate) if float(rate) else 0.0
    start = time.monotonic()
    for sequence in range(int(count)):
        if interval:
            delay = start + sequence * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        # a full queue at an unpaced rate is the benchmark's answer
        with contextlib.suppress(OSError):
            sock.sendto(struct.pack(">Q", sequence) + padding, target)
    print(json.dumps({"sent": int(count)}), flush=True)


def tcp_recv(address: str, port: str) -> None:
    server = socket.socket(_family(address), socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, int(port)))
    server.listen(1)
    server.settimeout(30)
    print("ready", flush=True)
    connection, _ = server.accept()
    connection.settimeout(30)
    digest, octets = hashlib.sha256(), 0
    while data := connection.recv(65536):
        digest.update(data)
        octets += len(data)
    print(json.dumps({"octets": octets, "sha256": digest.hexdigest()}), flush=True)


def tcp_send(address: str, port: str, octets: str, seed: str) -> None:
    data = random.Random(int(seed)).randbytes(int(octets))
    with socket.create_connection((address, int(port)), timeout=30) as sock:
        sock.sendall(data)
    print(json.dumps({"sha256": hashlib.sha256(data).hexdigest()}), flush=True)


def capture_udp(ifname: str, port: str, count: str, timeout: str) -> None:
    """UDP payloads to `port` sent out of `ifname` (IPv4 over Ethernet)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    sock.bind((ifname, 0))
    sock.settimeout(float(timeout))
    print("ready", flush=True)
    payloads: list[str] = []
    try:
        while len(payloads) < int(count):
            frame, address = sock.recvfrom(65535)
            # ETH_P_ALL: outgoing frames reach only such sockets
            if address[2] != socket.PACKET_OUTGOING or frame[12:14] != b"\x08\x00":
                continue
            ip = frame[14:]
            header_length = (ip[0] & 0x0F) * 4
            if ip[9] != socket.IPPROTO_UDP:
                continue
            udp = ip[header_length:]
            if struct.unpack_from(">H", udp, 2)[0] == int(port):
                payloads.append(udp[8:].hex())
    except TimeoutError:
        pass
    print(json.dumps({"payloads": payloads}), flush=True)


def inject(address: str, port: str, payload: str) -> None:
    sock = socket.socket(_family(address), socket.SOCK_DGRAM)
    sock.sendto(bytes.fromhex(payload), (address, int(port)))
    print(json.dumps({"sent": 1}), flush=True)


COMMANDS: dict[str, Callable[..., None]] = {
    "udp-recv": udp_recv,
    "udp-send": udp_send,
    "tcp-recv": tcp_recv,
    "tcp-send": tcp_send,
    "capture-udp": capture_udp,
    "inject": inject,
}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])
