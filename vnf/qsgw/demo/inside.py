"""Small tools the demo runs inside a namespace: `python -m qsgw.demo.inside`.

    metrics PORT                 print the gateway's Prometheus exposition
    tcp-sink ADDRESS PORT        accept one TCP connection, count what arrives,
                                 print {"octets": N, "seconds": S}
    tcp-source ADDRESS PORT SECONDS [SOURCE]
                                 send zeros for SECONDS, print {"octets": N}

The TCP pair is the throughput test when iperf3 is not installed.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.request

from qsgw.demo.timing import TIME_SCALE

_CHUNK = 64 * 1024
_ACCEPT_TIMEOUT = 20.0 * TIME_SCALE
_IO_TIMEOUT = 10.0 * TIME_SCALE


def metrics(port: int) -> str:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=_IO_TIMEOUT) as response:
        return str(response.read().decode("utf-8"))


def tcp_sink(address: str, port: int) -> dict[str, float]:
    with socket.create_server((address, port)) as server:
        server.settimeout(_ACCEPT_TIMEOUT)
        print("listening", flush=True)
        connection, _ = server.accept()
    with connection:
        connection.settimeout(_IO_TIMEOUT)
        return _drain(connection)


def _drain(connection: socket.socket) -> dict[str, float]:
    octets = 0
    first = last = time.monotonic()
    while chunk := connection.recv(_CHUNK):
        if octets == 0:
            first = time.monotonic()
        octets += len(chunk)
        last = time.monotonic()
    return {"octets": octets, "seconds": last - first}


def tcp_source(address: str, port: int, seconds: float, source: str) -> dict[str, int]:
    payload = bytes(_CHUNK)
    octets = 0
    bind = (source, 0) if source else None
    target = (address, port)
    with socket.create_connection(target, _IO_TIMEOUT, bind) as connection:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            connection.sendall(payload)
            octets += len(payload)
    return {"octets": octets}


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "metrics":
        sys.stdout.write(metrics(int(rest[0])))
    elif command == "tcp-sink":
        print(json.dumps(tcp_sink(rest[0], int(rest[1]))))
    elif command == "tcp-source":
        source = rest[3] if len(rest) > 3 else ""
        print(json.dumps(tcp_source(rest[0], int(rest[1]), float(rest[2]), source)))
    else:
        print(f"unknown command '{command}'", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
