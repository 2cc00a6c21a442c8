"""What the daemon costs beyond the IKE engines: CPU per IKE SA of two
gateways in one process, and CPU per control request of a daemon.

    . scripts/env.sh && python bench/ike_daemon_cost.py \
        [--sas 200] [--rounds 7] [--concurrency 8] [--requests 3000]

1. Two `Gateway`s (the daemon's I/O shell, recording data planes) in one
   event loop, on 127.0.0.1 and 127.0.0.2 with UDP sockets of their own,
   set up and delete SAS childless IKE SAs per round the way
   `ike_setup_rate.py` does (AES-256-GCM, PRF-HMAC-SHA384, X25519 plus
   ML-KEM-768 in IKE_INTERMEDIATE, PSK and a required PPK, one connection
   and pair of identities per IKE SA, CONCURRENCY in flight), driven by
   `Gateway.initiate` and `Gateway.terminate_ike`: no control socket, one
   event loop. Printed: the process CPU per IKE SA (both gateways, set-up
   and deletion), median and lowest of the rounds. Set beside
   `ike_engine_cost.py` (the engines alone) and the CPU column of
   `ike_setup_rate.py` (two daemons, each with its own loop, driven over
   their control sockets) it tells where a daemon's time goes.
2. A `qsgw run` daemon answering REQUESTS requests of an unknown command,
   each on a connection of its own (as the CLI sends them) and all on one
   `control.Session`: the daemon process's CPU per request.

Needs no root; loopback only. To compare with another tree, run it with
`PYTHONPATH=OTHER/vnf`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import cpu_seconds, use_repository_imports

use_repository_imports()

from tests.daemon.conftest import Daemon, free_port_pair  # noqa: E402

from qsgw.daemon import control, logs  # noqa: E402
from qsgw.daemon.config import load_config  # noqa: E402
from qsgw.daemon.server import Gateway  # noqa: E402
from qsgw.esp.recording import RecordingBackend  # noqa: E402

PROPOSAL = "aes256gcm16-prfsha384-x25519-ke1_mlkem768"
WAIT = 10.0
INFO = {"level": "info"}  # as the IKE benchmark's daemons log


def bench_connections(
    name: str, sas: int, addresses: tuple[str, str], port: int
) -> dict[str, Any]:
    """Like the IKE benchmark's: one connection and pair of identities per
    IKE SA."""
    local, remote = addresses
    peer = "b" if name == "a" else "a"
    return {
        f"c{index}": {
            "local_addrs": [local],
            "remote_addrs": [remote],
            "remote_port": port,
            "local": {"id": f"{name}-{index}.bench.example"},
            "remote": {"id": f"{peer}-{index}.bench.example"},
            "proposals": [PROPOSAL],
            "psk_file": "bench.psk",
            "ppk": {"id": "bench-ppk", "file": "bench.ppk", "required": True},
        }
        for index in range(sas)
    }


def write_secrets(directory: Path) -> None:
    for name in ("bench.psk", "bench.ppk"):
        path = directory / name
        path.touch(mode=0o600)
        path.write_text("0x" + os.urandom(32).hex() + "\n")


async def gateway_rounds(
    a: Gateway, b: Gateway, sas: int, rounds: int, concurrency: int
) -> list[float]:
    """CPU ms per IKE SA of each round (set-up and deletion, both gateways)."""
    await b.start()
    await a.start()
    limit = asyncio.Semaphore(concurrency)

    async def set_up(index: int) -> None:
        async with limit:
            await a.initiate(f"c{index}", None, WAIT)

    results = []
    try:
        for _ in range(rounds):
            started = time.process_time()
            await asyncio.gather(*(set_up(i) for i in range(sas)))
            if len(b.engine.sas) != sas:
                raise SystemExit(f"responder has {len(b.engine.sas)} IKE SAs")
            await asyncio.gather(
                *(a.terminate_ike(i, WAIT) for i in list(a.engine.sas))
            )
            while b.engine.sas:
                await asyncio.sleep(0.001)
            results.append((time.process_time() - started) * 1000 / sas)
    finally:
        await a.shutdown()
        await b.shutdown()
    return results


def gateways_in_one_process(
    directory: Path, sas: int, rounds: int, concurrency: int
) -> list[float]:
    port = free_port_pair()
    addresses = ("127.0.0.1", "127.0.0.2")
    a, b = (
        Daemon(name, local, directory, port)
        for name, local in zip("ab", addresses, strict=True)
    )
    a.write_config(bench_connections("a", sas, addresses, port), log=INFO)
    b.write_config(bench_connections("b", sas, addresses[::-1], port), log=INFO)
    gateway_a = Gateway(load_config(a.config), RecordingBackend(first_spi=0x1000))
    gateway_b = Gateway(load_config(b.config), RecordingBackend(first_spi=0x2000))
    logs.configure("info", "text", directory / "gateways.log")
    return asyncio.run(gateway_rounds(gateway_a, gateway_b, sas, rounds, concurrency))


def control_request_cost(directory: Path, requests: int) -> dict[str, float]:
    """Daemon CPU µs per request, per way of connecting."""
    daemon = Daemon("control", "127.0.0.1", directory, free_port_pair())
    daemon.write_config({}, log=INFO)
    daemon.start()
    assert daemon.process is not None
    try:
        costs = {}
        for way, send in (
            ("one connection per request", _one_shot),
            ("one session", _in_session),
        ):
            before = cpu_seconds(daemon.process.pid)
            send(daemon.socket, requests)
            costs[way] = (cpu_seconds(daemon.process.pid) - before) * 1e6 / requests
        return costs
    finally:
        daemon.stop()


def _unknown(send: Callable[[str], Any]) -> None:
    try:
        send("no-such-command")
    except control.CommandError:
        return
    raise SystemExit("the daemon accepted an unknown command")


def _one_shot(path: Path, requests: int) -> None:
    for _ in range(requests):
        _unknown(lambda command: control.request(path, command, timeout=WAIT))


def _in_session(path: Path, requests: int) -> None:
    with control.Session(path, WAIT) as session:
        for _ in range(requests):
            _unknown(session.request)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sas", type=int, default=200, help="IKE SAs per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=3000)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="qsgw-daemon-cost-") as name:
        directory = Path(name)
        write_secrets(directory)
        rounds = gateways_in_one_process(
            directory, options.sas, options.rounds, options.concurrency
        )
        print(
            f"two gateways in one process, {PROPOSAL}, PSK + PPK, childless, "
            f"{options.concurrency} in flight: CPU ms per IKE SA (set-up and "
            f"deletion) median {statistics.median(rounds):.3f}, lowest "
            f"{min(rounds):.3f} ({options.rounds} rounds of {options.sas})"
        )
        for way, cost in control_request_cost(directory, options.requests).items():
            print(f"control request, {way}: daemon CPU {cost:.1f} µs per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
