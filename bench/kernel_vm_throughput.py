"""ESP throughput in the kernel VM: SAs from qsgw's KernelBackend vs `ip xfrm`.

    . scripts/env.sh && python bench/kernel_vm_throughput.py \
        [--runs 8] [--seconds 3] [--timeout 300]

Needs root and the VM of scripts/build-kernel-vm.sh (run here if missing).

One boot of the kernel VM (tools/vm/runvm.py) runs this file again with
`--guest`. Inside, each method gets two namespaces joined by veth
(tests/kernel/guest/netns.py: outer 192.0.2.1 and .2, inner 10.1.0.1 and
10.2.0.1) with one tunnel-mode Child SA pair (rfc4106(gcm(aes)) with a
256-bit key, 128-bit ICV, ESN, replay window 4096), the out/in/fwd policies
and the route to the remote inner network; iperf3 TCP runs from inner
address to inner address. The tunnel is installed either

  kernel_backend  by qsgw.esp.kernel.KernelBackend (XFRM over netlink), or
  ip_xfrm         by hand with `ip xfrm state/policy add` and `ip route`,

with the same keys, SPIs, selectors and priorities. Both tunnels exist side
by side; runs alternate between them, and each pair of back-to-back runs
gives one ratio. Before the runs the XFRM states, policies and routes of the
two methods are compared (keys masked); during each run the outbound SA's
packet counter must grow, proving the traffic went through ESP.

The VM's CPU is emulated (TCG), many times slower than the host: the
absolute figures say nothing about real kernel performance, only the ratio
of the two methods does.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

from common import REPOSITORY, Series, print_rows, ratio

RESULTS_FILE = "kernel_vm_throughput.json"
AEAD = "rfc4106(gcm(aes))"
KEY_OCTETS = 36  # AES-256 key and the 4-octet salt (RFC 4106 §8.1)
ICV_BITS = 128
REPLAY_WINDOW = 4096
SPI_A_TO_B = 0x1000
SPI_B_TO_A = 0x2000
REQID = 1
METHODS = ("kernel_backend", "ip_xfrm")
IPERF_GRACE = 30.0
KEY_PATTERN = re.compile(r"0x[0-9a-f]{16,}")
COUNTER_PATTERN = re.compile(r"(\d+)\(bytes\), (\d+)\(packets\)")


# --- inside the VM ----------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """The two directions' AEAD keys, shared by both methods; never printed."""

    a_to_b: bytes
    b_to_a: bytes

    def __repr__(self) -> str:
        return "Keys(<hidden>)"


def policy_priority(local_prefix: int, remote_prefix: int) -> int:
    """KernelBackend's priority for a policy (a lower number wins)."""
    return 100_000 - 256 * (local_prefix + remote_prefix)


def directions(keys: Keys, a_side: bool) -> tuple[int, int, bytes, bytes]:
    """Outbound SPI, inbound SPI, outbound key, inbound key of one side."""
    if a_side:
        return SPI_A_TO_B, SPI_B_TO_A, keys.a_to_b, keys.b_to_a
    return SPI_B_TO_A, SPI_A_TO_B, keys.b_to_a, keys.a_to_b


def install_with_backend(side: Any, peer: Any, keys: Keys, a_side: bool) -> None:
    """Runs in SIDE's namespace: SAs, policies and route via KernelBackend."""
    from qsgw.esp.backend import (
        Direction,
        EspAlgorithm,
        EspIntegrity,
        Lifetime,
        PolicySpec,
        SaSpec,
    )
    from qsgw.esp.kernel import KernelBackend

    out_spi, in_spi, out_key, in_key = directions(keys, a_side)
    me, them = ip_address(side.outer), ip_address(peer.outer)

    def sa(direction: Direction, spi: int, key: bytes, source: Any, dest: Any) -> Any:
        return SaSpec(
            direction=direction,
            spi=spi,
            source=source,
            destination=dest,
            algorithm=EspAlgorithm.AES_GCM_16,
            encryption_key=key,
            key_bits=256,
            integrity=EspIntegrity.NONE,
            integrity_key=b"",
            esn=True,
            replay_window=REPLAY_WINDOW,
            lifetime=Lifetime(),
            reqid=REQID,
            encapsulation=None,
        )

    local, remote = ip_network(side.inner_net), ip_network(peer.inner_net)
    backend = KernelBackend()
    backend.start(lambda event: None)
    try:
        backend.add_sa(sa(Direction.OUTBOUND, out_spi, out_key, me, them))
        backend.add_sa(sa(Direction.INBOUND, in_spi, in_key, them, me))
        backend.add_policy(
            PolicySpec(Direction.OUTBOUND, local, remote, me, them, REQID)
        )
        backend.add_policy(
            PolicySpec(Direction.INBOUND, local, remote, them, me, REQID)
        )
        backend.install_route(remote, ip_address(side.inner), 0)
    finally:
        backend.close()


def ip_commands(side: Any, peer: Any, keys: Keys, a_side: bool) -> list[list[str]]:
    """The `ip` commands that set up SIDE's half of the tunnel by hand."""
    out_spi, in_spi, out_key, in_key = directions(keys, a_side)
    local, remote = side.inner_net, peer.inner_net
    prefixes = ip_network(local).prefixlen, ip_network(remote).prefixlen
    priority = str(policy_priority(*prefixes))

    def state(source: str, destination: str, spi: int, key: bytes) -> list[str]:
        return [
            "xfrm", "state", "add", "src", source, "dst", destination,
            "proto", "esp", "spi", hex(spi), "reqid", str(REQID),
            "mode", "tunnel", "replay-window", str(REPLAY_WINDOW),
            "flag", "esn", "flag", "af-unspec",
            "aead", AEAD, "0x" + key.hex(), str(ICV_BITS),
        ]  # fmt: skip

    def policy(direction: str, source: str, destination: str) -> list[str]:
        outer = (side.outer, peer.outer)
        if direction != "out":
            outer = (peer.outer, side.outer)
        return [
            "xfrm", "policy", "add", "src", source, "dst", destination,
            "dir", direction, "priority", priority,
            "tmpl", "src", outer[0], "dst", outer[1],
            "proto", "esp", "reqid", str(REQID), "mode", "tunnel",
        ]  # fmt: skip

    # as KernelBackend's route: protocol static, scope universe
    route = ["route", "replace", remote, "dev", "va" if a_side else "vb"]
    route += ["proto", "static", "scope", "global"]
    return [
        state(side.outer, peer.outer, out_spi, out_key),
        state(peer.outer, side.outer, in_spi, in_key),
        policy("out", local, remote),
        policy("in", remote, local),
        policy("fwd", remote, local),
        [*route, "src", side.inner],
    ]


def install_with_ip(side: Any, peer: Any, keys: Keys, a_side: bool) -> None:
    for command in ip_commands(side, peer, keys, a_side):
        # keys are on this command line only; an error shows stderr, not argv
        result = subprocess.run(
            ["ip", "-n", side.namespace, *command],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"ip {' '.join(command[:3])}: {result.stderr.strip()}")


def xfrm_tables(namespace: str) -> str:
    """The namespace's XFRM states and policies and its routes, keys masked."""
    text = ""
    for table in (["xfrm", "state"], ["xfrm", "policy"], ["route"]):
        text += subprocess.run(
            ["ip", "-n", namespace, *table],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    return KEY_PATTERN.sub("<key>", text)


def esp_packets(namespace: str, source: str, destination: str, spi: int) -> int:
    """Packets the SA has protected or verified, from `ip -s xfrm state`."""
    command = ["ip", "-n", namespace, "-s", "xfrm", "state", "get"]
    command += ["src", source, "dst", destination, "proto", "esp", "spi", hex(spi)]
    text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = COUNTER_PATTERN.search(text)
    return int(match.group(2)) if match else 0


def iperf3(pair: Any, seconds: int) -> float:
    """TCP Mbit/s received through the tunnel, from inner a to inner b."""
    a, b = pair.a, pair.b
    server = subprocess.Popen(
        ["ip", "netns", "exec", b.namespace, "iperf3", "-s", "-1", "-B", b.inner],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = ["ip", "netns", "exec", a.namespace, "iperf3", "-c", b.inner]
        client += ["-B", a.inner, "-t", str(seconds), "-O", "1", "-J"]
        report = _retry_until_listening(client, seconds + IPERF_GRACE)
        received = report["end"]["sum_received"]["bits_per_second"]
        return float(received) / 1e6
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(timeout=10)


def _retry_until_listening(command: list[str], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
        report = json.loads(result.stdout or "{}")
        error = report.get("error")
        if result.returncode == 0 and not error:
            return report
        if time.monotonic() > deadline or "refused" not in str(error):
            raise RuntimeError(f"iperf3 failed: {error or result.stderr.strip()}")
        time.sleep(0.5)


Installer = Callable[[Any, Any, Keys, bool], None]
INSTALLERS: dict[str, Installer] = {
    "kernel_backend": install_with_backend,
    "ip_xfrm": install_with_ip,
}


def tunnel(method: str, keys: Keys) -> Any:
    """Two fresh namespaces with the tunnel installed by METHOD."""
    from netns import make_pair, run_in

    pair = make_pair(f"tp{method[0]}", 4, 4)
    try:
        installer = INSTALLERS[method]
        run_in(pair.a.namespace, installer, pair.a, pair.b, keys, True)
        run_in(pair.b.namespace, installer, pair.b, pair.a, keys, False)
    except BaseException:
        pair.delete()
        raise
    return pair


def outbound_packets(pair: Any) -> int:
    return esp_packets(pair.a.namespace, pair.a.outer, pair.b.outer, SPI_A_TO_B)


def one_run(method: str, pair: Any, index: int, seconds: int) -> dict[str, Any]:
    """One iperf3 measurement; the SA's counter must grow meanwhile."""
    before = outbound_packets(pair)
    mbps = iperf3(pair, seconds)
    packets = outbound_packets(pair) - before
    print(f"{method}: {mbps:.1f} Mbit/s, {packets} ESP packets", flush=True)
    return {"method": method, "index": index, "mbps": mbps, "esp_packets": packets}


def guest_main(options: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPOSITORY / "tests" / "kernel" / "guest"))
    # imported once here: the forked children inherit it (imports are slow
    # on the emulated CPU)
    import qsgw.esp.kernel

    keys = Keys(os.urandom(KEY_OCTETS), os.urandom(KEY_OCTETS))
    pairs: dict[str, Any] = {}
    runs = []
    try:
        for method in METHODS:
            pairs[method] = tunnel(method, keys)
        tables = {m: xfrm_tables(p.a.namespace) for m, p in pairs.items()}
        for index in range(options.runs):
            # alternate which method goes first, so neither always runs warm
            order = METHODS if index % 2 == 0 else METHODS[::-1]
            for method in order:
                runs.append(one_run(method, pairs[method], index, options.seconds))
    finally:
        for pair in pairs.values():
            pair.delete()
    driver = qsgw.esp.kernel.crypto_driver(AEAD)
    document = {
        "runs": runs,
        "tables": tables,
        "driver": driver,
        "kernel": os.uname().release,
    }
    Path("/qsgw-ctl", RESULTS_FILE).write_text(json.dumps(document))
    return 0


# --- on the host ------------------------------------------------------------------


def host_main(options: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("needs root (the VM's 9p export of /)", file=sys.stderr)
        return 2
    subprocess.run([str(REPOSITORY / "scripts" / "build-kernel-vm.sh")], check=True)
    sys.path.insert(0, str(REPOSITORY / "tools" / "vm"))
    from runvm import run_in_vm

    script = (
        f"cd {REPOSITORY}/bench\n"
        f"{sys.executable} {Path(__file__).resolve()} --guest "
        f"--runs {options.runs} --seconds {options.seconds}\n"
    )
    started = time.monotonic()
    result = run_in_vm(script, timeout=options.timeout)
    elapsed = time.monotonic() - started
    data = result.files.get(RESULTS_FILE)
    if result.status != 0 or data is None:
        print(f"the guest run failed (status {result.status}):")
        print(result.output[-4000:])
        return 1
    return report(json.loads(data), options, elapsed)


def report(
    document: dict[str, Any], options: argparse.Namespace, elapsed: float
) -> int:
    runs = document["runs"]
    series = {
        method: Series(
            method, "Mbit/s", tuple(r["mbps"] for r in runs if r["method"] == method)
        )
        for method in METHODS
    }
    print(
        f"\nESP throughput in the kernel VM ({document['kernel']}, {AEAD} via "
        f"{document['driver']}), iperf3 TCP {options.seconds} s per run, "
        f"{options.runs} runs per method, {elapsed:.0f} s in all"
    )
    rows = [["method", "median Mbit/s", "min", "max", "runs (Mbit/s)"]]
    for method, measured in series.items():
        samples = " ".join(f"{s:.1f}" for s in measured.samples)
        rows.append(
            [
                method,
                f"{measured.median:.1f}",
                f"{min(measured.samples):.1f}",
                f"{max(measured.samples):.1f}",
                samples,
            ]
        )
    print_rows(rows)
    value = ratio(series["kernel_backend"], series["ip_xfrm"])
    print(f"ratio kernel_backend / ip_xfrm (of the medians): {value:.3f}")
    paired = pair_ratios(runs)
    print(
        f"ratio kernel_backend / ip_xfrm (median of {len(paired)} back-to-back "
        f"pairs): {statistics.median(paired):.3f}"
    )
    return _check_runs(runs, document["tables"])


def pair_ratios(runs: list[dict[str, Any]]) -> list[float]:
    """kernel_backend / ip_xfrm for each pair of runs made back to back.

    The host's load drifts over minutes; two runs a few seconds apart see
    nearly the same machine, so their ratio is steadier than the medians'.
    """
    by_index: dict[int, dict[str, float]] = {}
    for run in runs:
        by_index.setdefault(run["index"], {})[run["method"]] = run["mbps"]
    return [
        pair["kernel_backend"] / pair["ip_xfrm"]
        for pair in by_index.values()
        if pair.get("ip_xfrm")
    ]


def _check_runs(runs: list[dict[str, Any]], tables: dict[str, str]) -> int:
    """Every run went through ESP, and both methods built the same tables."""
    status = 0
    if any(r["esp_packets"] == 0 for r in runs):
        print("FAILED: a run's outbound SA counted no packets")
        status = 1
    first, second = (tables[method].splitlines() for method in METHODS)
    if first == second:
        print("XFRM states, policies and routes: identical for both methods")
    else:
        print("XFRM states, policies or routes differ (keys masked):")
        diff = difflib.unified_diff(first, second, *METHODS, lineterm="")
        print("\n".join(diff))
    return status


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=8, help="runs per method")
    parser.add_argument("--seconds", type=int, default=3, help="iperf3 time per run")
    parser.add_argument("--timeout", type=float, default=300.0, help="VM time limit")
    parser.add_argument("--guest", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> int:
    options = parse_arguments()
    if options.guest:
        return guest_main(options)
    return host_main(options)


if __name__ == "__main__":
    sys.exit(main())
