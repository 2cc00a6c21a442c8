"""IKE SA setups per second: qsgw against qsgw beside strongSwan against strongSwan.

    . scripts/env.sh && python bench/ike_setup_rate.py \
        [--sas 200] [--rounds 5] [--concurrency 1 8] [--child] \
        [--only qsgw|strongswan] [--budget 600]

Needs root and the peer root filesystem of scripts/build-peers.sh.

Both pairs run at the same time in their own two namespaces joined by veth
(tests/interop/netns.py): two charon (driven through vici) and two
`qsgw run --foreground` daemons (driven through the control socket from this
process). Both sides negotiate the same IKE SA: AES-256-GCM, PRF-HMAC-SHA384,
X25519 in IKE_SA_INIT plus ML-KEM-768 in one IKE_INTERMEDIATE exchange
(RFC 9242, RFC 9370), PSK authentication and a required PPK (RFC 8784).
IKE SAs are childless (RFC 6023) unless `--child` asks for one Child SA
(AES-256-GCM) per IKE SA, which each side installs in its userspace data
plane (kernel-libipsec for strongSwan). Childless IKE SAs never reach the
data plane; qsgw then runs with its recording data plane.

A round starts SAS setups, one per connection (each connection has its own
pair of identities, which the responder must pick among), at most
`--concurrency` in flight, each one a blocking initiate that returns once
the IKE SA is established; its rate is SAS divided by the round's wall time.
The round's SAs are then deleted, untimed. Rounds alternate between the two
sides so that both see the same machine load; the medians over the rounds
and their ratio are printed, with the CPU time both daemons of a side spent
per IKE SA (setup and deletion).

strongSwan runs with Debian's plugin set, log level 0, 64 threads and its
per-IP half-open limits raised (`block_threshold`, `cookie_threshold[_ip]`),
which would otherwise drop or delay setups that arrive in parallel from one
address; qsgw runs with its `info` log level. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import vici
import yaml
from common import (
    Budget,
    BudgetExceeded,
    Series,
    cpu_seconds,
    print_rows,
    ratio,
    use_repository_imports,
)

use_repository_imports()

from tests.interop.peers import (  # noqa: E402
    IkeSecret,
    PpkSecret,
    QsgwDaemon,
    Site,
    SitePair,
    StrongswanPeer,
    build_peers,
    create_site_pair,
    peers_dir,
    wait_until,
)
from tests.interop.strongswan import (  # noqa: E402
    ConfValue,
    ConnectionConfig,
    Secret,
    site_to_site,
)

from qsgw.daemon import control  # noqa: E402

CHILD = "net"
IKE_PROPOSAL = "aes256gcm16-prfsha384-x25519-ke1_mlkem768"
ESP_PROPOSAL = "aes256gcm16"
PPK_ID = "bench-ppk"
SETUP_TIMEOUT = 20.0
CLEAR_TIMEOUT = 30.0
WARM_UP_SAS = 10

# strongSwan: SA lifecycle lines only (as qsgw at info); no per-IP half-open
# limits that would drop parallel setups from one address or answer them with
# a COOKIE (qsgw has no such limits yet); and enough threads, since every
# blocking vici initiate holds one of charon's threads until its IKE SA is up
# (with the default 16, eight waiting initiates starve the rest).
CHARON_SETTINGS: dict[str, ConfValue] = {
    "threads": 64,
    "reuse_ikesa": False,
    "block_threshold": 100000,
    "cookie_threshold": 100000,
    "cookie_threshold_ip": 100000,
    "filelog": {
        "charon": {
            "path": "/run/charon.log",
            "time_format": "%b %e %T",
            "append": True,
            "default": 0,
        }
    },
}


class SetupFailed(RuntimeError):
    """An IKE SA did not come up."""


T = TypeVar("T")


class SessionPool(Generic[T]):
    """Control sessions for the set-ups of one side.

    `--sessions per-setup` (the default) opens and closes one per set-up, as
    a command-line tool would; `persistent` keeps up to one per set-up in
    flight open between set-ups, as an orchestrator would. Both sides are
    driven the same way either way."""

    def __init__(
        self, opener: Callable[[], T], closer: Callable[[T], None], persistent: bool
    ) -> None:
        self._open, self._close = opener, closer
        self._persistent = persistent
        self._idle: list[T] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def session(self) -> Iterator[T]:
        with self._lock:
            session = self._idle.pop() if self._idle else None
        if session is None:
            session = self._open()
        try:
            yield session
        except BaseException:
            self._close(session)  # its state is unknown: not used again
            raise
        if not self._persistent:
            self._close(session)
            return
        with self._lock:
            self._idle.append(session)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for session in idle:
            self._close(session)


class Side(Protocol):
    """One implementation's pair of daemons with COUNT connections."""

    name: str

    def start(self) -> None: ...

    def setup_one(self, connection: str) -> None: ...

    def established(self) -> tuple[int, int]: ...

    def clear(self) -> None: ...

    def daemon_pids(self) -> tuple[int, ...]: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class Secrets:
    """The PSK and PPK both sides share; never printed."""

    psk: bytes = field(repr=False)
    ppk: bytes = field(repr=False)


def connection_name(index: int) -> str:
    return f"bench-{index}"


def numbered(site: Site, index: int) -> Site:
    """SITE with its own identity for connection INDEX.

    Every connection has its own pair of identities: an IKE_AUTH request
    carries INITIAL_CONTACT when its initiator has no other IKE SA with
    that peer, and the responder then deletes the older IKE SAs between the
    same identities (RFC 7296 §2.4).
    """
    host, _, domain = site.identity.partition(".")
    return replace(site, identity=f"{host}-{index}.{domain}")


# --- strongSwan -----------------------------------------------------------------


def _open_vici(peer: StrongswanPeer) -> tuple[socket.socket, Any]:
    """A vici session whose connect waits while charon's backlog is full.

    (A socket with a timeout is non-blocking, and a non-blocking connect to
    a unix socket with a full backlog fails at once with EAGAIN.)
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(peer.vici_socket))
    except BaseException:
        sock.close()
        raise
    sock.settimeout(SETUP_TIMEOUT + 10)
    return sock, vici.Session(sock)


@contextlib.contextmanager
def vici_session(peer: StrongswanPeer) -> Iterator[Any]:
    sock, session = _open_vici(peer)
    try:
        yield session
    finally:
        sock.close()


class StrongswanSide:
    """charon in both namespaces; left initiates through vici."""

    name = "strongSwan"

    def __init__(
        self,
        pair: SitePair,
        workdir: Path,
        secrets: Secrets,
        count: int,
        with_child: bool,
        persistent: bool = False,
    ) -> None:
        rootfs = peers_dir() / "rootfs"
        self.pair = pair
        self.count = count
        self.with_child = with_child
        self.secrets = secrets
        self.left = self._peer("left", pair.left, rootfs, workdir)
        self.right = self._peer("right", pair.right, rootfs, workdir)
        self.sessions = SessionPool(
            lambda: _open_vici(self.left), lambda s: s[0].close(), persistent
        )

    @staticmethod
    def _peer(name: str, site: Site, rootfs: Path, workdir: Path) -> StrongswanPeer:
        directory = workdir / f"strongswan-{name}"
        return StrongswanPeer(name, site.namespace, rootfs, directory, CHARON_SETTINGS)

    def start(self) -> None:
        self.left.start()
        self.right.start()
        for peer, local, remote in (
            (self.left, self.pair.left, self.pair.right),
            (self.right, self.pair.right, self.pair.left),
        ):
            peer.load(*self._configuration(local, remote))

    def _configuration(
        self, local: Site, remote: Site
    ) -> tuple[list[ConnectionConfig], list[Secret]]:
        connections: list[ConnectionConfig] = []
        secrets: list[Secret] = [PpkSecret(PPK_ID, self.secrets.ppk)]
        for index in range(1, self.count + 1):
            me, peer = numbered(local, index), numbered(remote, index)
            connection = site_to_site(
                connection_name(index),
                me,
                peer,
                proposals=(IKE_PROPOSAL,),
                with_child=self.with_child,
                ppk_id=PPK_ID,
            )
            connections.append(connection)
            ids = (me.identity, peer.identity)
            secrets.append(IkeSecret(ids, self.secrets.psk))
        return connections, secrets

    def setup_one(self, connection: str) -> None:
        request: dict[str, Any] = {
            "ike": connection,
            "timeout": int(SETUP_TIMEOUT * 1000),
            "loglevel": -1,
        }
        if self.with_child:
            request["child"] = connection  # site_to_site names it so
        try:
            with self.sessions.session() as (_, session):
                for _ in session.initiate(request):
                    pass
        except Exception as exc:  # vici raises its own CommandException
            raise SetupFailed(f"strongSwan initiate failed: {exc}") from None

    def established(self) -> tuple[int, int]:
        left = len(self.left.established_ike_sas())
        return left, len(self.right.established_ike_sas())

    def clear(self) -> None:
        with vici_session(self.left) as session:
            for sa in self.left.list_sas():
                request = {
                    "ike-id": str(sa.unique_id),
                    "timeout": int(CLEAR_TIMEOUT * 1000),
                    "loglevel": -1,
                }
                for _ in session.terminate(request):
                    pass
        _wait_cleared(
            self, lambda: (len(self.left.raw_sas()), len(self.right.raw_sas()))
        )

    def daemon_pids(self) -> tuple[int, ...]:
        return _pids(self.left.process, self.right.process)

    def stop(self) -> None:
        self.sessions.close()
        try:
            self.left.stop()
        finally:
            self.right.stop()


# --- qsgw -------------------------------------------------------------------------


class QsgwSide:
    """`qsgw run --foreground` in both namespaces; left initiates."""

    name = "qsgw"

    def __init__(
        self,
        pair: SitePair,
        workdir: Path,
        secrets: Secrets,
        count: int,
        with_child: bool,
        data_plane: str = "recording",
        persistent: bool = False,
    ) -> None:
        self.pair = pair
        self.count = count
        self.with_child = with_child
        self.data_plane = data_plane
        self.directory = workdir / "qsgw"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write_secret("bench.psk", secrets.psk)
        self._write_secret("bench.ppk", secrets.ppk)
        self.left = self._daemon("left", pair.left, pair.right)
        self.right = self._daemon("right", pair.right, pair.left)
        self.sessions = SessionPool(
            lambda: control.Session(self.left.control_socket, SETUP_TIMEOUT + 5),
            control.Session.close,
            persistent,
        )

    def _write_secret(self, name: str, value: bytes) -> None:
        path = self.directory / name
        path.touch(mode=0o600)
        path.write_text("0x" + value.hex() + "\n")

    def _daemon(self, name: str, local: Site, remote: Site) -> QsgwDaemon:
        config = self.directory / f"{name}.yaml"
        socket_path = self.directory / f"{name}.sock"
        connections = {
            connection_name(index): self._connection(
                numbered(local, index), numbered(remote, index)
            )
            for index in range(1, self.count + 1)
        }
        log = {"level": "info", "file": str(self.directory / f"{name}.log")}
        gateway = {
            "listen": [local.outer4],
            "control_socket": str(socket_path),
            "data_plane": self.data_plane,
            "log": log,
        }
        document = {"gateway": gateway, "connections": connections}
        config.write_text(yaml.safe_dump(document, sort_keys=False))
        return QsgwDaemon(
            name,
            local.namespace,
            config,
            socket_path,
            self.directory,
            extra_args=("--foreground",),
        )

    def _connection(self, local: Site, remote: Site) -> dict[str, Any]:
        connection: dict[str, Any] = {
            "local_addrs": [local.outer4],
            "remote_addrs": [remote.outer4],
            "local": {"id": local.identity},
            "remote": {"id": remote.identity},
            "proposals": [IKE_PROPOSAL],
            "psk_file": "bench.psk",
            "ppk": {"id": PPK_ID, "file": "bench.ppk", "required": True},
        }
        if self.with_child:
            child = {
                "local_ts": [local.inner4_net],
                "remote_ts": [remote.inner4_net],
                "esp_proposals": [ESP_PROPOSAL],
            }
            connection["children"] = {CHILD: child}
        return connection

    def start(self) -> None:
        self.right.start()
        self.left.start()

    def setup_one(self, connection: str) -> None:
        args: dict[str, Any] = {"conn": connection, "wait": SETUP_TIMEOUT}
        if self.with_child:
            args["child"] = CHILD
        try:
            with self.sessions.session() as session:
                session.request("initiate", args)
        except (control.CommandError, control.DaemonUnreachable, OSError) as exc:
            raise SetupFailed(f"qsgw initiate failed: {exc}") from None

    def _sas(self, daemon: QsgwDaemon) -> list[dict[str, Any]]:
        return list(control.request(daemon.control_socket, "sas", {}, CLEAR_TIMEOUT))

    def _established(self, daemon: QsgwDaemon) -> int:
        return sum(1 for sa in self._sas(daemon) if sa["state"] == "ESTABLISHED")

    def established(self) -> tuple[int, int]:
        return self._established(self.left), self._established(self.right)

    def clear(self) -> None:
        socket_path = self.left.control_socket
        for sa in self._sas(self.left):
            args = {"ike": sa["unique_id"], "wait": CLEAR_TIMEOUT}
            with contextlib.suppress(control.CommandError):
                control.request(socket_path, "terminate", args, CLEAR_TIMEOUT + 5)
        _wait_cleared(
            self, lambda: (len(self._sas(self.left)), len(self._sas(self.right)))
        )

    def daemon_pids(self) -> tuple[int, ...]:
        return _pids(self.left.process, self.right.process)

    def stop(self) -> None:
        self.sessions.close()
        try:
            self.left.stop()
        finally:
            self.right.stop()


class _HasPid(Protocol):
    pid: int


def _pids(*processes: _HasPid | None) -> tuple[int, ...]:
    return tuple(p.pid for p in processes if p is not None)


def _wait_cleared(side: Side, counts: Callable[[], tuple[int, int]]) -> None:
    if not wait_until(lambda: counts() == (0, 0), CLEAR_TIMEOUT, interval=0.1):
        raise SetupFailed(f"{side.name}: SAs left after deletion: {counts()}")


# --- measuring ----------------------------------------------------------------------


@dataclass
class Results:
    """Setups/s and CPU ms per IKE SA, per side and concurrency."""

    rates: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    cpu: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def add(self, key: tuple[str, int], rate: float, cpu_ms: float) -> None:
        self.rates.setdefault(key, []).append(rate)
        self.cpu.setdefault(key, []).append(cpu_ms)


def run_round(side: Side, count: int, concurrency: int) -> tuple[float, float]:
    """Sets up COUNT IKE SAs; returns setups/s and CPU ms per IKE SA."""
    pids = side.daemon_pids()
    cpu_before = cpu_seconds(*pids)
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        names = [connection_name(index) for index in range(1, count + 1)]
        futures = [pool.submit(side.setup_one, name) for name in names]
        errors = [f.exception() for f in futures]
    elapsed = time.perf_counter() - started

    failed = [e for e in errors if e is not None]
    if failed:
        raise SetupFailed(f"{len(failed)} of {count} setups failed: {failed[0]}")
    # the responder may still be finishing the last IKE_AUTH it answered
    if not wait_until(lambda: side.established() == (count, count), 5.0, 0.1):
        got = side.established()
        raise SetupFailed(f"{side.name}: expected {count} IKE SAs, got {got}")
    side.clear()
    cpu_ms = (cpu_seconds(*pids) - cpu_before) * 1000 / count
    return count / elapsed, cpu_ms


def measure(
    sides: list[Side], options: argparse.Namespace, budget: Budget, results: Results
) -> None:
    """Fills RESULTS round by round until done or out of BUDGET."""
    for side in sides:
        try:
            run_round(side, WARM_UP_SAS, 1)
        except SetupFailed as exc:
            results.failures[side.name] = f"warm-up: {exc}"
    for concurrency in options.concurrency:
        for round_number in range(1, options.rounds + 1):
            for side in sides:
                if side.name in results.failures:
                    continue
                budget.check(f"{side.name}, round {round_number}")
                try:
                    rate, cpu_ms = run_round(side, options.sas, concurrency)
                except SetupFailed as exc:
                    results.failures[side.name] = str(exc)
                    continue
                results.add((side.name, concurrency), rate, cpu_ms)
                print(
                    f"  {side.name:10} concurrency {concurrency}, round "
                    f"{round_number}: {rate:7.1f} setups/s, "
                    f"{cpu_ms:6.2f} CPU ms per IKE SA",
                    flush=True,
                )


def report(results: Results, options: argparse.Namespace) -> None:
    kind = "one Child SA each" if options.child else "childless (RFC 6023)"
    print(
        f"\nIKE SA setups, {IKE_PROPOSAL}, PSK + PPK, {kind}, "
        f"{options.sas} SAs per round, {options.rounds} rounds, "
        f"control sessions {options.sessions}"
    )
    rows = [["side", "concurrency", "setups/s median", "min", "max", "CPU ms/SA"]]
    for (name, concurrency), rates in results.rates.items():
        rate = Series(name, "setups/s", tuple(rates))
        cpu = Series(name, "ms", tuple(results.cpu[(name, concurrency)]))
        rows.append(
            [
                name,
                str(concurrency),
                f"{rate.median:.1f}",
                f"{min(rates):.1f}",
                f"{max(rates):.1f}",
                f"{cpu.median:.2f}",
            ]
        )
    print_rows(rows)
    for concurrency in options.concurrency:
        _print_ratio(results, concurrency)
    for name, reason in results.failures.items():
        print(f"FAILED {name}: {reason}")


def _print_ratio(results: Results, concurrency: int) -> None:
    qsgw = Series("qsgw", "", tuple(results.rates.get(("qsgw", concurrency), ())))
    swan = Series("sw", "", tuple(results.rates.get(("strongSwan", concurrency), ())))
    if qsgw.samples and swan.samples:
        print(
            f"ratio qsgw / strongSwan, concurrency {concurrency}: "
            f"{ratio(qsgw, swan):.2f}x setups/s"
        )


# --- set-up and tear-down -----------------------------------------------------------


@contextlib.contextmanager
def started_sides(
    options: argparse.Namespace, workdir: Path
) -> Iterator[tuple[list[Side], dict[str, str]]]:
    """Namespaces and daemons for each side asked for; all removed on exit."""
    secrets = Secrets(os.urandom(32), os.urandom(32))
    pairs: list[SitePair] = []
    sides: list[Side] = []
    failures: dict[str, str] = {}
    persistent = options.sessions == "persistent"
    try:
        for key, kind in (("strongswan", StrongswanSide), ("qsgw", QsgwSide)):
            if options.only not in (None, key):
                continue
            pair = create_site_pair(f"qsgw-b{key[:2]}")
            pairs.append(pair)
            side: Side
            count = max(options.sas, WARM_UP_SAS)
            if kind is QsgwSide:
                side = QsgwSide(
                    pair,
                    workdir,
                    secrets,
                    count,
                    options.child,
                    options.data_plane,
                    persistent,
                )
            else:
                side = StrongswanSide(
                    pair, workdir, secrets, count, options.child, persistent
                )
            sides.append(side)
            try:
                side.start()
            except Exception as exc:
                failures[side.name] = f"start failed: {exc}"
        yield [s for s in sides if s.name not in failures], failures
    finally:
        for side in sides:
            with contextlib.suppress(Exception):
                side.stop()
        for pair in pairs:
            pair.delete()


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sas", type=int, default=200, help="IKE SAs per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--child", action="store_true", help="one Child SA each")
    parser.add_argument("--only", choices=["qsgw", "strongswan"])
    parser.add_argument(
        "--data-plane",
        choices=["recording", "userspace", "auto"],
        help="qsgw's data plane (default: recording when childless, else "
        "userspace); childless IKE SAs never reach it",
    )
    parser.add_argument(
        "--sessions",
        choices=["per-setup", "persistent"],
        default="per-setup",
        help="a control (vici) connection per set-up, or kept open between "
        "set-ups; the same for both sides",
    )
    parser.add_argument("--budget", type=float, default=600.0, help="seconds")
    parser.add_argument("--keep", action="store_true", help="keep logs and configs")
    return parser.parse_args()


def main() -> int:
    options = parse_arguments()
    if options.data_plane is None:
        options.data_plane = "userspace" if options.child else "recording"
    if os.geteuid() != 0:
        print("needs root (network namespaces, chroot)", file=sys.stderr)
        return 2
    budget = Budget(options.budget)
    build_peers()
    workdir = Path(tempfile.mkdtemp(prefix="qsgw-bench-", dir="/tmp"))
    results = Results()
    try:
        with started_sides(options, workdir) as (sides, failures):
            results.failures.update(failures)
            try:
                measure(sides, options, budget, results)
            except BudgetExceeded as exc:
                print(f"stopped early: {exc}")
    finally:
        if options.keep or results.failures:
            print(f"logs and configurations kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report(results, options)
    return 1 if results.failures else 0


if __name__ == "__main__":
    sys.exit(main())
