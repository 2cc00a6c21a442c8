"""The gateway daemon: the I/O shell around the sans-I/O IKE engine.

`Gateway` owns the UDP sockets, the one timer the engine asks for, the data
plane, the control socket and the metrics endpoint. After every call into
the engine it sends the engine's datagrams and applies its events: Child SA
events become data-plane calls, every event feeds the metrics, lifecycle
events are logged. Data-plane events (soft expiry, acquires) go back into
the engine. The daemon makes no protocol decision of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from qsgw import __version__
from qsgw.daemon import control, logs
from qsgw.daemon.config import ConfigError, GatewayConfig, load_config
from qsgw.daemon.dataplane import (
    ChildInstaller,
    DataPlaneThread,
    EspOverUdp,
    TextEndpoint,
    UdpSender,
)
from qsgw.daemon.logs import SaLogger, set_level
from qsgw.daemon.status import connection_json, relative_times, to_json
from qsgw.daemon.transport import (
    Endpoint,
    UdpEndpoint,
    UdpSocketTaker,
    UdpTransport,
    classify,
)
from qsgw.esp.backend import BackendEvent, BackendEventKind, EspBackend
from qsgw.ike.config import ChildSpec, ConnectionSpec, StartAction
from qsgw.ike.engine import EngineSettings, IkeEngine
from qsgw.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaRekeyed,
    Event,
    ExchangeCompleted,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaFailed,
    IkeSaRekeyed,
    LivenessFailed,
    MessageReceived,
    MessageRejected,
    MessageSent,
)
from qsgw.ike.sa import IkeSaState
from qsgw.metrics.gateway import GatewayMetrics, Snapshot
from qsgw.metrics.http import serve_metrics

logger = logging.getLogger(__name__)

# most events: metrics count them, nothing else listens
_COUNTED_ONLY = frozenset({MessageSent, MessageReceived, ExchangeCompleted})

Clock = Callable[[], float]
# key pairs per key exchange method in use made while the loop is idle, so
# that no set-up waits for an X25519 or ML-KEM key generation
_KEYS_AHEAD = 2
_SHUTDOWN_POLL = 0.02
# INFO and DEBUG lines wait in the log buffer at most this long (logs.py)
_LOG_FLUSH_INTERVAL = 0.2


class Gateway:
    """One running gateway: sockets, engine, data plane, control, metrics."""

    def __init__(
        self,
        config: GatewayConfig,
        backend: EspBackend,
        *,
        clock: Clock = time.monotonic,
        rng: Callable[[int], bytes] = os.urandom,
        esp_sender: UdpSender | None = None,
    ) -> None:
        self.config = config
        self._esp_sender = esp_sender
        self.backend = backend
        self.clock = clock
        settings = EngineSettings(
            ike_port=config.gateway.ike_port,
            natt_port=config.gateway.natt_port,
            keys_ahead=_KEYS_AHEAD,
        )
        self.engine = IkeEngine(config.connections, rng, settings)
        self.data_plane = DataPlaneThread(backend)
        self.installer = ChildInstaller(self.data_plane, self._child_spec)
        self.metrics = GatewayMetrics(
            self._snapshot, version=__version__, data_plane=backend.name
        )
        self.started = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: UdpTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._log_flush: asyncio.TimerHandle | None = None
        self._config_seen = _fingerprint(config.source)
        self._timer_deadline: float | None = None  # what _timer is armed for
        self._servers: list[asyncio.Server] = []
        self._stop = asyncio.Event()
        self._control_socket: Path | None = None
        self._data_plane_started = False
        self._closed = False
        self._waiters: dict[int, list[asyncio.Future[str]]] = {}
        self._pending_results: dict[int, tuple[bool, str]] = {}
        # Child SAs `initiate` asked for over an established IKE SA
        self._child_waiters: dict[int, tuple[int, str, asyncio.Future[str]]] = {}
        self._children_up: set[int] = set()
        self._making_keys = False  # a _make_keys callback is scheduled

    # --- life cycle -----------------------------------------------------------

    async def start(self) -> None:
        """Open everything; on failure close what was opened and raise."""
        try:
            await self._open()
        except BaseException:
            await self._close()
            raise

    async def _open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.started = self.clock()
        gateway = self.config.gateway
        self._transport = UdpTransport(
            gateway.listen, gateway.ike_port, gateway.natt_port, self._on_datagram
        )
        self._transport.start(self._loop)
        if self.data_plane.name == "kernel":
            self._transport.hand_esp_in_udp_to_kernel()
        self.data_plane.start(self._on_backend_event_threadsafe)
        self._data_plane_started = True
        if isinstance(self.backend, UdpSocketTaker):
            # ESP in UDP is read and sent on the data plane's threads; IKE
            # on port 4500 comes back to the loop through `_on_datagram`
            self._transport.hand_esp_in_udp_to(self.backend)
        if self._esp_sender is not None:
            self._esp_sender.target = self._send_esp
        path = gateway.control_socket
        self._servers.append(await control.serve(control.Commands(self), path))
        self._arm_watch()
        self._control_socket = path
        if gateway.metrics is not None:
            metrics = gateway.metrics
            server = await serve_metrics(
                self.metrics, str(metrics.address), metrics.port
            )
            self._servers.append(server)
        self._load_connections((), self.config.connections)
        logs.defer_flushes(True)
        self._flush_logs()
        logger.info(
            "qsgw %s started: %d connections, data plane %s, IKE on %s ports %d/%d",
            __version__,
            len(self.config.connections),
            self.backend.name,
            ", ".join(str(a) for a in gateway.listen),
            gateway.ike_port,
            gateway.natt_port,
        )

    def request_stop(self) -> None:
        self._stop.set()

    async def run(
        self,
        *,
        handle_signals: bool = True,
        ready: Callable[[], None] | None = None,
    ) -> None:
        """Serve until SIGTERM/SIGINT (or `request_stop`), then shut down.

        `ready` is called once every socket is open."""
        await self.start()
        if ready is not None:
            ready()
        loop = asyncio.get_running_loop()
        if handle_signals:
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self._reload_on_signal)
        try:
            await self._stop.wait()
        finally:
            if handle_signals:
                for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(signum)
            await self.shutdown()

    async def shutdown(self) -> None:
        """Delete every IKE SA (bounded wait), then clear the data plane."""
        if self._closed:
            return
        logger.info("shutting down: deleting %d IKE SAs", len(self.engine.sas))
        now = self.clock()
        for ike_sa in list(self.engine.sas):
            with self._guard("a shutdown DELETE"):
                self.engine.terminate_ike(ike_sa, now)
        self._pump()
        deadline = self.clock() + self.config.gateway.shutdown_timeout
        while self.engine.sas and self.clock() < deadline:
            await asyncio.sleep(_SHUTDOWN_POLL)
        if self.engine.sas:
            logger.warning("%d IKE SAs not deleted in time", len(self.engine.sas))
        await self._close()

    async def _close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._watch is not None:
            self._watch.cancel()
        if self._log_flush is not None:
            self._log_flush.cancel()
        for server in self._servers:
            server.close()
            await server.wait_closed()
        self._servers = []
        if self._control_socket is not None:
            control.remove_socket(self._control_socket)
        if self._transport is not None:
            self._transport.close()
        if self._data_plane_started:
            self.installer.remove_all()
        try:
            self.data_plane.close()
        except Exception as exc:
            logger.error("data plane close failed: %s", exc)
        logger.info("stopped")
        logs.defer_flushes(False)

    # --- engine I/O -----------------------------------------------------------

    def _on_datagram(
        self, endpoint: UdpEndpoint, data: bytes, local: Endpoint, remote: Endpoint
    ) -> None:
        if not endpoint.natt:  # port 500: IKE only, no marker to look at
            self._receive_ike(data, local, remote)
            return
        received = classify(data, endpoint.natt)
        if received.kind == "ike":
            self._receive_ike(received.data, local, remote)
        elif received.kind == "esp" and isinstance(self.backend, EspOverUdp):
            source = (str(remote[0]), remote[1])
            self.backend.receive_esp(received.data, source, (str(local[0]), local[1]))
        elif received.kind != "keepalive":
            logger.debug("dropped a %s datagram from %s", received.kind, remote[0])

    def _receive_ike(self, data: bytes, local: Endpoint, remote: Endpoint) -> None:
        try:
            self.engine.receive_datagram(data, local, remote, self.clock())
        except Exception:  # the engine catches its own; a bug must not stop us
            logger.exception("internal error while handling a datagram")
        self._pump()

    def _send_esp(
        self, datagram: bytes, source: TextEndpoint, destination: TextEndpoint
    ) -> None:
        """ESP in UDP from the data plane (any thread): out of our 4500 socket."""
        transport = self._transport
        if transport is not None:
            local = (ip_address(source[0]), source[1])
            transport.send_esp(
                datagram, local, (ip_address(destination[0]), destination[1])
            )

    def _pump(self) -> None:
        """Apply the engine's events, send what it wants sent, re-arm the timer.

        Child SAs first: one is in the data plane before the message that
        lets the peer use it leaves (make-before-break on rekey). The work
        the engine put aside (`IkeEngine.defer`) and waiting commands come
        after the messages have left; metrics and logs after the commands
        have answered.
        """
        transport = self._transport
        datagrams = self.engine.datagrams_to_send()
        events = self.engine.events()
        for event in events:
            if isinstance(event, ChildSaEstablished | ChildSaRekeyed):
                self.installer.install(event)
            elif isinstance(event, ChildSaDeleted):
                self.installer.remove(event)
        if transport is not None:
            for datagram in datagrams:
                transport.send_ike(datagram.data, datagram.local, datagram.remote)
        # key derivations for the next messages, while the peer reads ours
        self.engine.run_deferred()
        for event in events:
            if type(event) not in _COUNTED_ONLY:
                self._note_result(event)
        self._resolve_waiters()
        self._arm_timer()
        if events:
            self._record_later(events)
        if self.engine.keys.wanted and not self._making_keys and self._loop:
            self._making_keys = True
            self._loop.call_soon(self._make_keys)

    def _flush_logs(self) -> None:
        logs.flush()
        if self._loop is not None and not self._closed:
            self._log_flush = self._loop.call_later(
                _LOG_FLUSH_INTERVAL, self._flush_logs
            )

    def _make_keys(self) -> None:
        """One key pair per turn of the loop, so a message waits for one at most."""
        keys = self.engine.keys
        try:
            keys.make_one()
        except Exception:
            logger.exception("internal error while making key pairs ahead")
            keys.depth = 0  # each exchange makes its own from now on
        if keys.wanted and self._loop is not None and not self._closed:
            self._loop.call_soon(self._make_keys)
        else:
            self._making_keys = False

    def _arm_timer(self) -> None:
        """Keep one timer at or before the engine's next deadline.

        A deadline that moved later leaves the armed timer alone (most
        messages push their IKE SA's deadline out); it checks again when
        it fires. Only an earlier deadline replaces it."""
        deadline = self.engine.next_timer()
        timer = self._timer
        if timer is not None:
            armed = self._timer_deadline
            if deadline is None or (armed is not None and armed <= deadline):
                return
            timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is not None and self._loop is not None:
            delay = max(0.0, deadline - self.clock())
            self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        armed = self._timer_deadline
        deadline = self.engine.next_timer()
        if deadline is None or (armed is not None and deadline > armed):
            self._arm_timer()  # the deadline moved later meanwhile
            return
        with self._guard("the timer"):
            self.engine.handle_timer(self.clock())
        self._pump()

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """A bug in the engine must not stop the gateway: log it, keep going
        (the pump after it still re-arms the timer)."""
        try:
            yield
        except Exception:
            logger.exception("internal error while handling %s", what)

    # --- events -----------------------------------------------------------------

    def _record_later(self, events: list[Event]) -> None:
        """Count and log the events once the loop has run what is already
        due: the commands that the events' results woke answer first."""
        if self._loop is None:
            self._record(events)
        else:
            self._loop.call_soon(self._record, events)

    def _record(self, events: list[Event]) -> None:
        for event in events:
            self.metrics.observe(event)
            if type(event) not in _COUNTED_ONLY:
                self._log(event)

    def _log(self, event: Event) -> None:
        if isinstance(event, IkeSaEstablished):
            role = "initiator" if event.initiator else "responder"
            _sa_log(event.connection, event.ike_sa).info(
                "IKE SA established as %s in %.3f s", role, event.duration
            )
        elif isinstance(event, IkeSaRekeyed):
            _sa_log(event.connection, event.new_ike_sa).info(
                "IKE SA rekeyed, replaces #%d", event.old_ike_sa
            )
        elif isinstance(event, IkeSaDeleted):
            _sa_log(event.connection, event.ike_sa).info(
                "IKE SA deleted (%s)", event.reason
            )
        elif isinstance(event, IkeSaFailed):
            _sa_log(event.connection, event.ike_sa).warning(
                "IKE SA failed: %s %s", event.reason, event.notify
            )
        else:
            self._log_child(event)

    def _log_child(self, event: Event) -> None:
        if isinstance(event, ChildSaEstablished):
            _sa_log(event.connection, event.ike_sa).info(
                "Child SA %s #%d established, SPIs %08x_i %08x_o",
                event.child,
                event.child_sa,
                event.keys.inbound_spi,
                event.keys.outbound_spi,
            )
        elif isinstance(event, ChildSaRekeyed):
            _sa_log(event.connection, event.ike_sa).info(
                "Child SA %s #%d rekeyed, replaces #%d, SPIs %08x_i %08x_o",
                event.child,
                event.child_sa,
                event.old_child_sa,
                event.keys.inbound_spi,
                event.keys.outbound_spi,
            )
        elif isinstance(event, ChildSaDeleted):
            _sa_log(event.connection, event.ike_sa).info(
                "Child SA %s #%d deleted (%s)",
                event.child,
                event.child_sa,
                event.reason,
            )
        elif isinstance(event, LivenessFailed):
            _sa_log(event.connection, event.ike_sa).warning("peer is not responding")
        elif isinstance(event, MessageRejected):
            logger.warning("rejected a message: %s %s", event.reason, event.exchange)

    def _on_backend_event_threadsafe(self, event: BackendEvent) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._on_backend_event, event)

    def _on_backend_event(self, event: BackendEvent) -> None:
        now = self.clock()
        if event.kind == BackendEventKind.ACQUIRE:
            target = self.installer.by_reqid(event.reqid)
            if target is None:
                logger.debug("acquire for unknown reqid %d", event.reqid)
                return
            self._engine_call(self.engine.acquire, target[0], target[1], now)
        else:
            hard = event.kind == BackendEventKind.HARD_EXPIRE
            self._engine_call(self.engine.child_expired, event.spi, hard, now)
        self._pump()

    def _engine_call(self, method: Callable[..., Any], *args: Any) -> Any:
        try:
            return method(*args)
        except ValueError as exc:  # e.g. a connection removed meanwhile
            logger.warning("%s", exc)
        except Exception:
            logger.exception("internal error in %s", method.__name__)
        return None

    # --- connections: start actions, traps, reload ----------------------------

    def _child_spec(self, connection: str, child: str) -> ChildSpec | None:
        spec = self.config.connection(connection)
        if spec is None:
            return None
        return next((c for c in spec.children if c.name == child), None)

    def _load_connections(
        self, old: tuple[ConnectionSpec, ...], new: tuple[ConnectionSpec, ...]
    ) -> None:
        """Apply traps and start actions of new or changed connections."""
        before = {c.name: c for c in old}
        for spec in new:
            if before.get(spec.name) == spec:
                continue
            self.installer.install_traps(spec)
            # one IKE SA per connection: the engine brings up the other
            # start children on it right after IKE_AUTH
            first = next(
                (c for c in spec.children if c.start_action == StartAction.START),
                None,
            )
            if first is not None:
                self._start_child(spec.name, first.name)
        self._pump()

    def _start_child(self, connection: str, child: str) -> None:
        ike_sa = self._engine_call(
            self.engine.initiate, connection, self.clock(), child
        )
        if ike_sa is not None:
            _sa_log(connection, ike_sa).debug("initiating (start_action: start)")

    def reload(self) -> str:
        """Re-read the file; a bad file changes nothing."""
        try:
            new = load_config(self.config.source)
        except ConfigError as exc:
            logger.error("reload refused, old configuration kept:\n%s", exc)
            self.metrics.reload_done(ok=False)
            reason = f"reload refused, old configuration kept:\n{exc}"
            raise control.CommandError(reason) from None
        old = self.config
        self._warn_restart_needed(old, new)
        set_level(new.gateway.log.level)
        gateway = old.gateway.model_copy(update={"log": new.gateway.log})
        self.config = GatewayConfig(new.source, gateway, new.connections)
        self._drop_traps(old.connections, new.connections)
        self.engine.set_connections(new.connections, self.clock())
        self._load_connections(old.connections, new.connections)
        self.metrics.reload_done(ok=True)
        summary = _reload_summary(old.connections, new.connections)
        logger.info("configuration reloaded: %s", summary)
        return f"configuration reloaded: {summary}"

    def _reload_on_signal(self) -> None:
        with contextlib.suppress(control.CommandError):  # already logged
            self.reload()

    def _arm_watch(self) -> None:
        interval = self.config.gateway.watch_config
        if interval > 0 and self._loop is not None and not self._closed:
            self._watch = self._loop.call_later(interval, self._look_at_config)

    def _look_at_config(self) -> None:
        """Reload when the file changed (a ConfigMap swaps it in place)."""
        seen = _fingerprint(self.config.source)
        if seen != self._config_seen:
            self._config_seen = seen
            logger.info("%s changed: reloading", self.config.source)
            self._reload_on_signal()
        self._arm_watch()

    def _drop_traps(
        self, old: tuple[ConnectionSpec, ...], new: tuple[ConnectionSpec, ...]
    ) -> None:
        after = {c.name: c for c in new}
        for spec in old:
            if after.get(spec.name) != spec:
                self.installer.remove_traps(spec.name)

    def _warn_restart_needed(self, old: GatewayConfig, new: GatewayConfig) -> None:
        fixed = (
            "listen",
            "ike_port",
            "natt_port",
            "control_socket",
            "data_plane",
            "metrics",
            "shutdown_timeout",
        )
        for name in fixed:
            if getattr(old.gateway, name) != getattr(new.gateway, name):
                logger.warning("gateway.%s changed: takes effect on restart", name)

    # --- commands (called by the control socket) --------------------------------

    async def initiate(self, connection: str, child: str | None, timeout: float) -> str:
        if self.config.connection(connection) is None:
            raise control.CommandError(f"no connection named '{connection}'")
        if child is not None and self._child_spec(connection, child) is None:
            raise control.CommandError(
                f"connection '{connection}' has no child '{child}'"
            )
        established = None if child is None else self._established_ike_sa(connection)
        if child is not None and established is not None:
            return await self._create_child(established, child, timeout)
        ike_sa = self.engine.initiate(connection, self.clock(), child)
        _sa_log(connection, ike_sa).debug("initiating (requested)")
        waiter = self._waiter(ike_sa)
        self._pump()
        if timeout <= 0:
            return f"initiating IKE SA #{ike_sa}"
        return await self._wait(waiter, ike_sa, timeout)

    def _established_ike_sa(self, connection: str) -> int | None:
        for sa in self.engine.ike_sas_of(connection):
            if sa.state == IkeSaState.ESTABLISHED:
                return sa.unique_id
        return None

    async def _create_child(self, ike_sa: int, child: str, timeout: float) -> str:
        """Like strongSwan: a child of a connection whose IKE SA is up comes
        over that IKE SA (CREATE_CHILD_SA), not with a new IKE SA."""
        sa = self.engine.sas[ike_sa]
        for existing in sa.children.values():
            if existing.spec.name == child:
                return f"Child SA {child} #{existing.unique_id} is already up"
        child_sa = self.engine.create_child(ike_sa, child, self.clock())
        _sa_log(sa.connection.name, ike_sa).debug("creating Child SA %s", child)
        if timeout <= 0:
            self._pump()
            return f"creating Child SA {child} #{child_sa} on IKE SA #{ike_sa}"
        waiter = asyncio.get_running_loop().create_future()
        self._child_waiters[child_sa] = (ike_sa, child, waiter)
        self._pump()
        return await self._wait_child(waiter, child_sa, timeout)

    async def _wait_child(
        self, waiter: asyncio.Future[str], child_sa: int, timeout: float
    ) -> str:
        loop = asyncio.get_running_loop()
        reason = f"Child SA #{child_sa}: no outcome within {timeout:g} s"
        expiry = loop.call_later(timeout, _fail, waiter, reason)
        try:
            return await waiter
        finally:
            expiry.cancel()
            self._child_waiters.pop(child_sa, None)

    async def terminate_ike(self, ike_sa: int, timeout: float) -> str:
        if ike_sa not in self.engine.sas:
            raise control.CommandError(f"no IKE SA #{ike_sa}")
        waiter = self._waiter(ike_sa)
        self.engine.terminate_ike(ike_sa, self.clock())
        self._pump()
        if timeout <= 0:
            return f"deleting IKE SA #{ike_sa}"
        return await self._wait(waiter, ike_sa, timeout)

    async def terminate_connection(self, connection: str, timeout: float) -> str:
        ids = [
            i for i, sa in self.engine.sas.items() if sa.connection.name == connection
        ]
        if not ids:
            raise control.CommandError(f"no IKE SA of connection '{connection}'")
        results = await asyncio.gather(*(self.terminate_ike(i, timeout) for i in ids))
        return "\n".join(results)

    def rekey_ike(self, ike_sa: int) -> str:
        if ike_sa not in self.engine.sas:
            raise control.CommandError(f"no IKE SA #{ike_sa}")
        self.engine.rekey_ike(ike_sa, self.clock())
        self._pump()
        return f"rekeying IKE SA #{ike_sa}"

    def rekey_child(self, child_sa: int) -> str:
        if self.engine.find_child(child_sa) is None:
            raise control.CommandError(f"no Child SA #{child_sa}")
        self.engine.rekey_child(child_sa, self.clock())
        self._pump()
        return f"rekeying Child SA #{child_sa}"

    def sas(self) -> list[Any]:
        now = self.clock()
        listing = [relative_times(to_json(i), now) for i in self.engine.ike_sas()]
        for ike_sa in listing:
            for child in ike_sa.get("children", []):
                child.update(self._traffic(child))
        return listing

    def _traffic(self, child: dict[str, Any]) -> dict[str, int]:
        """What the data plane counted for a Child SA, as swanctl shows it."""
        try:
            installed = self.installer.by_inbound_spi(int(child["inbound_spi"], 16))
        except (KeyError, TypeError, ValueError):
            return {}
        if installed is None:
            return {}
        try:
            inbound = self.data_plane.counters(installed.inbound_spi, installed.local)
            outbound = self.data_plane.counters(
                installed.outbound_spi, installed.remote
            )
        except Exception as exc:  # counters are informative: never fail `sas`
            logger.debug("no counters for Child SA %s: %s", child.get("name"), exc)
            return {}
        return {
            "bytes_in": inbound.bytes,
            "packets_in": inbound.packets,
            "bytes_out": outbound.bytes,
            "packets_out": outbound.packets,
        }

    def conns(self) -> list[Any]:
        return [connection_json(c) for c in self.config.connections]

    def status(self) -> dict[str, Any]:
        snapshot = self._snapshot()
        return {
            "version": __version__,
            "pid": os.getpid(),
            "config": str(self.config.source),
            "data_plane": self.backend.name,
            "uptime": round(self.clock() - self.started, 3),
            "connections": len(self.config.connections),
            "ike_sas": dict(snapshot.ike_sas_by_state),
            "child_sas": dict(snapshot.child_sas_by_state),
            "installed_child_sas": len(self.installer.children),
            "crypto": self._crypto_drivers(),
        }

    def _crypto_drivers(self) -> dict[str, str]:
        """Which implementation carries each ESP algorithm in the data plane."""
        drivers = getattr(self.backend, "crypto_drivers", None)
        return dict(drivers()) if callable(drivers) else {}

    # --- waiting for outcomes ------------------------------------------------------

    def _waiter(self, ike_sa: int) -> asyncio.Future[str]:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(ike_sa, []).append(future)
        return future

    async def _wait(
        self, waiter: asyncio.Future[str], ike_sa: int, timeout: float
    ) -> str:
        # one timer handle, not wait_for's task and shield per command
        loop = asyncio.get_running_loop()
        reason = f"IKE SA #{ike_sa}: no outcome within {timeout:g} s"
        expiry = loop.call_later(timeout, _fail, waiter, reason)
        try:
            return await waiter
        finally:
            expiry.cancel()
            waiters = self._waiters.get(ike_sa, [])
            if waiter in waiters:
                waiters.remove(waiter)

    def _note_result(self, event: Event) -> None:
        if isinstance(event, ChildSaEstablished):
            if event.child_sa in self._child_waiters:
                self._children_up.add(event.child_sa)
        elif isinstance(event, IkeSaEstablished):
            text = f"IKE SA #{event.ike_sa} established"
            self._pending_results[event.ike_sa] = (True, text)
        elif isinstance(event, IkeSaFailed):
            reason = f"{event.reason} {event.notify}".strip()
            text = f"IKE SA #{event.ike_sa} failed: {reason}"
            self._pending_results[event.ike_sa] = (False, text)
        elif isinstance(event, IkeSaDeleted):
            text = f"IKE SA #{event.ike_sa} deleted ({event.reason})"
            self._pending_results.setdefault(event.ike_sa, (True, text))

    def _resolve_waiters(self) -> None:
        if self._child_waiters:
            self._resolve_child_waiters()
        results, self._pending_results = self._pending_results, {}
        for ike_sa, (ok, text) in results.items():
            for future in self._waiters.pop(ike_sa, []):
                if future.done():
                    continue
                if ok:
                    future.set_result(text)
                else:
                    future.set_exception(control.CommandError(text))

    def _resolve_child_waiters(self) -> None:
        """Up when its ChildSaEstablished came; failed once the engine no
        longer has it queued or in a CREATE_CHILD_SA (refused, IKE SA gone)."""
        for child_sa, (ike_sa, child, waiter) in list(self._child_waiters.items()):
            if waiter.done():
                continue
            if child_sa in self._children_up:
                text = f"Child SA {child} #{child_sa} established on IKE SA #{ike_sa}"
                waiter.set_result(text)
            elif not self.engine.child_pending(ike_sa, child_sa):
                text = f"Child SA {child} #{child_sa} failed (CREATE_CHILD_SA)"
                waiter.set_exception(control.CommandError(text))
        self._children_up.clear()

    # --- metrics -----------------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        from qsgw.daemon.counters import snapshot

        return snapshot(self.engine, self.installer, self.data_plane)


def _fail(waiter: asyncio.Future[str], reason: str) -> None:
    if not waiter.done():
        waiter.set_exception(control.CommandError(reason))


def _sa_log(connection: str, ike_sa: int) -> SaLogger:
    return SaLogger(logger, connection, ike_sa)


def _reload_summary(
    old: tuple[ConnectionSpec, ...], new: tuple[ConnectionSpec, ...]
) -> str:
    before = {c.name: c for c in old}
    after = {c.name: c for c in new}
    added = len(after.keys() - before.keys())
    removed = len(before.keys() - after.keys())
    changed = sum(1 for n in after.keys() & before.keys() if after[n] != before[n])
    return (
        f"{len(new)} connections ({added} added, {changed} changed, {removed} removed)"
    )


def _fingerprint(path: Path) -> tuple[int, int, int] | None:
    """What tells a changed file apart, following symbolic links."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)
