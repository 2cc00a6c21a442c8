"""CPU per IKE SA of the two IKE engines alone, in memory, no daemon.

    . scripts/env.sh && python bench/ike_engine_cost.py [--sas 200] [--rounds 7]

Two `IkeEngine`s wired back to back by the exchange tests' harness
(tests/exchange/ike_peers.py `Link`, seeded randomness, explicit time)
set up childless IKE SAs (RFC 6023) the way `ike_setup_rate.py` does:
AES-256-GCM, PRF-HMAC-SHA384, X25519 in IKE_SA_INIT plus ML-KEM-768 in one
IKE_INTERMEDIATE exchange (RFC 9242, RFC 9370), PSK authentication and a
required PPK (RFC 8784). Each round sets up SAS pairs of engines and
times them with the process CPU clock; the median and the lowest round are
printed in ms per IKE SA (both engines together). What the daemons spend
beyond this is I/O, asyncio, the control socket, logging and metrics.

To compare with another tree, run it with `PYTHONPATH=OTHER/vnf`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from common import use_repository_imports

use_repository_imports()

from tests.exchange.ike_peers import Link, connection, ppk  # noqa: E402

from qsgw.ike.config import ConnectionSpec  # noqa: E402

PROPOSAL = "aes256gcm16-prfsha384-x25519-ke1_mlkem768"


def side(initiator: bool) -> ConnectionSpec:
    return connection(
        initiator=initiator,
        proposal=PROPOSAL,
        children=(),
        ppks=(ppk(),),
        ppk_required=True,
    )


def set_up_one() -> Link:
    """One childless hybrid IKE SA between two fresh engines."""
    link = Link(side(initiator=True), side(initiator=False))
    link.initiate()
    link.run()
    return link


def check_one() -> None:
    """The set-up measured is the whole one: established, with the PPK."""
    (sa,) = set_up_one().i.engine.ike_sas()
    if sa.state != "ESTABLISHED" or not sa.ppk:
        raise SystemExit(f"the IKE SA did not come up with its PPK: {sa.state}")


def round_ms(count: int) -> float:
    started = time.process_time()
    for _ in range(count):
        set_up_one()
    return (time.process_time() - started) * 1000 / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sas", type=int, default=200, help="IKE SAs per round")
    parser.add_argument("--rounds", type=int, default=7)
    options = parser.parse_args()

    check_one()  # and the imports, first key objects
    rounds = [round_ms(options.sas) for _ in range(options.rounds)]
    print(
        f"two in-memory engines, {PROPOSAL}, PSK + PPK, childless: "
        f"CPU ms per IKE SA median {statistics.median(rounds):.3f}, "
        f"lowest {min(rounds):.3f} ({options.rounds} rounds of {options.sas})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
