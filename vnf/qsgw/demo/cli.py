"""`qsgw demo`: the command line of the embedded demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

from qsgw.demo.cleanup import Interrupted, interruptible
from qsgw.demo.topology import DemoError

if TYPE_CHECKING:
    from qsgw.demo.scenario import DemoResult

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
ROOT_MESSAGE = (
    "qsgw demo needs root: it creates network namespaces, a veth pair and "
    "TUN devices; run it with sudo"
)
DATA_PLANES = ("auto", "userspace", "kernel")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-plane",
        choices=DATA_PLANES,
        default="auto",
        help="ESP data plane: kernel XFRM if the kernel accepts ESP (auto), "
        "or force one",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=3.0,
        metavar="S",
        help="duration of the throughput burst (default: 3)",
    )
    parser.add_argument(
        "--throughput-tool",
        choices=("auto", "iperf3", "python"),
        default="auto",
        help="what measures throughput: iperf3 if installed (auto), or the "
        "demo's own TCP sender and receiver",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def root_problem(euid: int | None = None) -> str | None:
    """The message for a user who is not root (by default the effective
    user of this process), or None."""
    user = os.geteuid() if euid is None else euid
    return None if user == 0 else ROOT_MESSAGE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="qsgw demo",
        description="two gateways in two network namespaces, X25519 + "
        "ML-KEM-768 with a PPK, real traffic through the tunnel",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(options: argparse.Namespace) -> int:
    """Run the demo for parsed `options` (also the handler of `qsgw demo`)."""
    # checked before the gateway's modules load, so that it is all a user
    # without root sees
    problem = root_problem()
    if problem is not None:
        print(problem, file=sys.stderr)
        return EXIT_FAILED
    if options.seconds <= 0 or options.seconds > 60:
        print("qsgw demo: --seconds must be between 0 and 60", file=sys.stderr)
        return EXIT_FAILED
    from qsgw.demo.scenario import DemoOptions, DemoResult, run_demo

    settings = DemoOptions(options.data_plane, options.seconds, options.throughput_tool)
    result = DemoResult("", ("", ""), "")
    try:
        with interruptible():
            run_demo(settings, result)
    except DemoError as exc:
        return _failed(options, result, str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        return _failed(options, result, "interrupted (Ctrl-C)", EXIT_INTERRUPTED)
    except Interrupted as exc:
        return _failed(options, result, f"interrupted ({exc})", EXIT_INTERRUPTED)
    except Exception as exc:  # a bug of ours; cleanup has run all the same
        reason = f"internal error: {type(exc).__name__}: {exc}"
        return _failed(options, result, reason, EXIT_FAILED)
    _print(options, result, None)
    return EXIT_OK if not result.cleanup_failures else EXIT_FAILED


def _failed(
    options: argparse.Namespace, result: DemoResult, error: str, code: int
) -> int:
    _print(options, result, error)
    return code


def _print(options: argparse.Namespace, result: DemoResult, error: str | None) -> None:
    from qsgw.demo.report import to_json, to_text

    if options.json:
        print(json.dumps(to_json(result, error), indent=2))
        return
    if error is None:
        print(to_text(result))
        return
    print(f"qsgw demo failed: {error}", file=sys.stderr)
    cleaned = "everything it created was removed"
    if result.cleanup_failures:
        cleaned = "NOT removed: " + "; ".join(result.cleanup_failures)
    print(f"qsgw demo: {cleaned}", file=sys.stderr)
