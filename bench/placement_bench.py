"""Placement of many tunnels over many pods: time and movement.

    python bench/placement_bench.py [--tunnels 1000000] [--pods 200]

Prints the time of a fresh placement, the load spread, and for one pod
added, one pod removed and one pod lost: the time and how many tunnels
moved against the theoretical minimum (n/(p+1) for an added pod: its fair
share; the removed pod's own tunnels for a removal). Not a test: figures.
"""

from __future__ import annotations

import argparse
import time

from qsgw_operator.placement import Placement, Pod, moved, place


def timed(label: str, **kwargs: object) -> tuple[Placement, float]:
    started, cpu = time.perf_counter(), time.process_time()
    result = place(**kwargs)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    # CPU time as well: wall time suffers when the machine is shared
    print(f"{label:<28} {seconds:7.2f} s wall, {cpu:7.2f} s CPU")
    return result, seconds


def spread(result: Placement) -> str:
    loads = list(result.loads.values())
    return f"load {min(loads)}..{max(loads)} (bounds {result.lower}..{result.upper})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tunnels", type=int, default=1_000_000)
    parser.add_argument("--pods", type=int, default=200)
    parser.add_argument("--capacity", type=int, default=64000)
    args = parser.parse_args()
    n, p = args.tunnels, args.pods

    tunnels = [f"tunnel-{i}" for i in range(n)]
    pods = [Pod(f"gw-{i}", f"node-{i}") for i in range(p)]
    common = {"tunnels": tunnels, "capacity": args.capacity, "backups": 1}
    fresh, _ = timed(f"fresh {n} over {p}", pods=pods, **common)
    print(f"  {spread(fresh)}")

    history = {"previous": fresh.active, "previous_backups": fresh.backups}
    grown = [*pods, Pod(f"gw-{p}", f"node-{p}")]
    added, _ = timed("one pod added", pods=grown, **common, **history)
    minimum = n / (p + 1)
    count = moved(fresh.active, added.active)
    print(f"  moved {count} = {count / minimum:.3f} x n/(p+1) ({minimum:.0f})")

    removed, _ = timed("one pod removed (or lost)", pods=pods[1:], **common, **history)
    own = fresh.loads[pods[0].name]
    count = moved(fresh.active, removed.active)
    print(f"  moved {count} = {count / own:.3f} x its own {own} tunnels")
    promoted = sum(
        1
        for t, pod in fresh.active.items()
        if pod == pods[0].name and removed.active.get(t) in fresh.backups[t]
    )
    print(f"  {promoted} of {own} promoted onto their backup")


if __name__ == "__main__":
    main()
