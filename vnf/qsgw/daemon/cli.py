"""`qsgw`: run the gateway and talk to it, in the spirit of swanctl.

    qsgw run --config FILE [--foreground | --detach]
    qsgw check --config FILE
    qsgw reload
    qsgw initiate --conn NAME [--child NAME] [--wait S]
    qsgw terminate --ike ID | --conn NAME [--wait S]
    qsgw rekey --ike ID | --child ID
    qsgw conns [--json]
    qsgw sas [--json]
    qsgw status [--json]

Exit codes: 0 done, 1 the daemon refused or the operation failed,
2 bad usage or a bad configuration, 3 the daemon cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qsgw import __version__
from qsgw.daemon import control

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

_SOCKET_ENV = "QSGW_SOCKET"


class _ConfigRefused(Exception):
    """Stands in for ConfigError until the configuration module is loaded."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    options = parser.parse_args(argv)
    try:
        return int(options.handler(options))
    except control.DaemonUnreachable as exc:
        return _fail(str(exc), EXIT_UNREACHABLE)
    except control.CommandError as exc:
        return _fail(str(exc), EXIT_FAILED)
    except _ConfigRefused as exc:
        return _fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        return EXIT_FAILED


def _fail(message: str, code: int) -> int:
    print(f"qsgw: {message}", file=sys.stderr)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qsgw", description="qsgw, a quantum-safe IPsec gateway"
    )
    parser.add_argument("--version", action="version", version=f"qsgw {__version__}")
    parser.add_argument(
        "--socket",
        type=Path,
        default=None,
        help=f"control socket (default: ${_SOCKET_ENV} or {control.DEFAULT_SOCKET})",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(commands)
    _add_operations(commands)
    _add_listings(commands)
    _add_demo(commands)
    return parser


def _add_run(commands: Any) -> None:
    run = commands.add_parser("run", help="run the gateway daemon")
    run.add_argument("--config", type=Path, required=True)
    mode = run.add_mutually_exclusive_group()
    mode.add_argument(
        "--foreground",
        action="store_true",
        help="stay in the foreground, logging to stderr (the default)",
    )
    mode.add_argument(
        "--detach",
        action="store_true",
        help="detach once started (classic daemon; logs to syslog or log.file)",
    )
    run.set_defaults(handler=_run)
    check = commands.add_parser("check", help="validate a configuration file")
    check.add_argument("--config", type=Path, required=True)
    check.set_defaults(handler=_check)


def _add_operations(commands: Any) -> None:
    reload = commands.add_parser("reload", help="re-read the configuration")
    reload.set_defaults(handler=_simple("reload"))
    initiate = commands.add_parser("initiate", help="bring up a connection")
    initiate.add_argument("--conn", required=True)
    initiate.add_argument(
        "--child",
        help="the Child SA to bring up; over the connection's IKE SA"
        " (CREATE_CHILD_SA) when one is established",
    )
    _add_wait(initiate)
    initiate.set_defaults(handler=_initiate)
    terminate = commands.add_parser("terminate", help="delete IKE SAs")
    which = terminate.add_mutually_exclusive_group(required=True)
    which.add_argument("--ike", type=int, help="unique id of the IKE SA")
    which.add_argument("--conn", help="every IKE SA of this connection")
    _add_wait(terminate)
    terminate.set_defaults(handler=_terminate)
    rekey = commands.add_parser("rekey", help="rekey an IKE or Child SA")
    target = rekey.add_mutually_exclusive_group(required=True)
    target.add_argument("--ike", type=int, help="unique id of the IKE SA")
    target.add_argument("--child", type=int, help="unique id of the Child SA")
    rekey.set_defaults(handler=_rekey)


def _add_wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        type=float,
        default=control.DEFAULT_WAIT,
        metavar="SECONDS",
        help="how long to wait for the outcome; 0 returns at once",
    )


def _add_demo(commands: Any) -> None:
    from qsgw.demo import add_arguments, run

    demo = commands.add_parser(
        "demo", help="two gateways in namespaces, hybrid ML-KEM + PPK, real traffic"
    )
    add_arguments(demo)
    demo.set_defaults(handler=run)


def _add_listings(commands: Any) -> None:
    for name, text in (
        ("conns", "list loaded connections"),
        ("sas", "list IKE and Child SAs"),
        ("status", "show the daemon's status"),
    ):
        listing = commands.add_parser(name, help=text)
        listing.add_argument("--json", action="store_true", help="print JSON")
        listing.set_defaults(handler=_listing(name))


# --- handlers ------------------------------------------------------------------


def _socket(options: argparse.Namespace) -> Path:
    if options.socket is not None:
        return Path(options.socket)
    return Path(os.environ.get(_SOCKET_ENV, str(control.DEFAULT_SOCKET)))


# The daemon's modules load only for `run` and `check`, so that the control
# commands start quickly.


def _run(options: argparse.Namespace) -> int:
    from qsgw.daemon.config import ConfigError
    from qsgw.daemon.runner import run

    try:
        return run(options.config, options.socket, foreground=not options.detach)
    except ConfigError as exc:
        raise _ConfigRefused(str(exc)) from None


def _check(options: argparse.Namespace) -> int:
    from qsgw.daemon.config import ConfigError, load_config

    try:
        config = load_config(options.config)
    except ConfigError as exc:
        raise _ConfigRefused(str(exc)) from None
    print(f"{options.config}: {len(config.connections)} connections, valid")
    return EXIT_OK


def _simple(command: str) -> Any:
    def handler(options: argparse.Namespace) -> int:
        print(control.request(_socket(options), command))
        return EXIT_OK

    return handler


def _initiate(options: argparse.Namespace) -> int:
    args = {"conn": options.conn, "child": options.child, "wait": options.wait}
    result = control.request(_socket(options), "initiate", args, options.wait + 5)
    print(result)
    return EXIT_OK


def _terminate(options: argparse.Namespace) -> int:
    args: dict[str, Any] = {"wait": options.wait}
    if options.ike is not None:
        args["ike"] = options.ike
    else:
        args["conn"] = options.conn
    print(control.request(_socket(options), "terminate", args, options.wait + 5))
    return EXIT_OK


def _rekey(options: argparse.Namespace) -> int:
    args = {"ike": options.ike} if options.ike is not None else {"child": options.child}
    print(control.request(_socket(options), "rekey", args))
    return EXIT_OK


def _listing(command: str) -> Any:
    def handler(options: argparse.Namespace) -> int:
        from qsgw.daemon.render import render_conns, render_mapping, render_sas

        result = control.request(_socket(options), command)
        if options.json:
            print(json.dumps(result, indent=2))
        elif command == "sas":
            print(render_sas(result))
        elif command == "conns":
            print(render_conns(result))
        else:
            print(render_mapping(result))
        return EXIT_OK

    return handler


if __name__ == "__main__":
    sys.exit(main())
