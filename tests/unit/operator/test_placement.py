"""Properties of tunnel placement: balance, determinism, capacity, movement."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from qsgw_operator.placement import DEFAULT_EPSILON, Placement, Pod, moved, place

EPSILON = DEFAULT_EPSILON
PROPERTY = settings(max_examples=60, deadline=None)


def tunnels_named(count: int) -> list[str]:
    return [f"tunnel-{i}" for i in range(count)]


def pods_named(names: range | list[int]) -> list[Pod]:
    return [Pod(f"gw-{i}", f"node-{i}") for i in names]


def deficit(loads: dict[str, int], pods: list[Pod], lower: int) -> int:
    return sum(max(0, lower - loads.get(pod.name, 0)) for pod in pods)


def excess(loads: dict[str, int], pods: list[Pod], upper: int) -> int:
    return sum(max(0, loads.get(pod.name, 0) - upper) for pod in pods)


def assert_valid(result: Placement, tunnels: list[str], pods: list[Pod]) -> None:
    names = {pod.name for pod in pods}
    assert set(result.active) | set(result.unplaced) == set(tunnels)
    assert set(result.active).isdisjoint(result.unplaced)
    assert set(result.active.values()) <= names
    counted = {pod.name: 0 for pod in pods}
    for pod in result.active.values():
        counted[pod] += 1
    assert counted == dict(result.loads)


# the sizes that matter: few tunnels on many pods, many on few, in between
sizes = st.tuples(st.integers(0, 3000), st.integers(1, 24))


@PROPERTY
@given(sizes)
def test_no_pod_exceeds_ceil_share_times_one_plus_epsilon(
    size: tuple[int, int],
) -> None:
    n, p = size
    tunnels, pods = tunnels_named(n), pods_named(range(p))
    result = place(tunnels, pods, capacity=64000)
    assert_valid(result, tunnels, pods)
    assert not result.unplaced
    ceiling = math.ceil(n / p * (1 + EPSILON))
    assert max(result.loads.values()) <= ceiling
    assert min(result.loads.values()) >= math.floor(n / p * (1 - EPSILON))


@PROPERTY
@given(sizes, st.randoms(use_true_random=False))
def test_same_inputs_in_any_order_give_the_same_placement(
    size: tuple[int, int], rng: random.Random
) -> None:
    n, p = size
    tunnels, pods = tunnels_named(n), pods_named(range(p))
    first = place(tunnels, pods, capacity=64000)
    rng.shuffle(tunnels)
    rng.shuffle(pods)
    again = place(tunnels, pods, capacity=64000)
    assert again == first


@PROPERTY
@given(st.integers(0, 2000), st.integers(1, 12), st.integers(1, 300))
def test_capacity_per_pod_is_never_exceeded(n: int, p: int, capacity: int) -> None:
    tunnels, pods = tunnels_named(n), pods_named(range(p))
    result = place(tunnels, pods, capacity=capacity)
    assert_valid(result, tunnels, pods)
    assert max(result.loads.values()) <= capacity
    assert len(result.unplaced) == max(0, n - p * capacity)


@PROPERTY
@given(st.integers(1, 3000), st.integers(1, 16), st.integers(1, 8))
def test_scale_up_moves_exactly_the_least_any_balanced_placement_must(
    n: int, p: int, added: int
) -> None:
    tunnels = tunnels_named(n)
    before_pods, after_pods = pods_named(range(p)), pods_named(range(p + added))
    before = place(tunnels, before_pods, capacity=64000)
    after = place(
        tunnels,
        after_pods,
        capacity=64000,
        previous=before.active,
        previous_backups=before.backups,
    )
    assert_valid(after, tunnels, after_pods)
    least = max(
        excess(dict(before.loads), after_pods, after.upper),
        deficit(dict(before.loads), after_pods, after.lower),
    )
    assert moved(before.active, after.active) == least
    assert max(after.loads.values()) <= after.upper


@PROPERTY
@given(st.integers(1, 3000), st.integers(2, 16), st.data())
def test_scale_down_moves_removed_tunnels_and_only_fills_below_lower(
    n: int, p: int, data: st.DataObject
) -> None:
    removed = data.draw(st.integers(1, p - 1))
    tunnels, before_pods = tunnels_named(n), pods_named(range(p))
    after_pods = before_pods[: p - removed]
    before = place(tunnels, before_pods, capacity=64000, backups=1)
    after = place(
        tunnels,
        after_pods,
        capacity=64000,
        previous=before.active,
        previous_backups=before.backups,
    )
    assert_valid(after, tunnels, after_pods)
    kept = {pod.name for pod in after_pods}
    stayed = {t: pod for t, pod in before.active.items() if pod in kept}
    assert moved(stayed, after.active) <= deficit(
        dict(before.loads), after_pods, after.lower
    )
    assert max(after.loads.values()) <= after.upper


@PROPERTY
@given(st.integers(10, 3000), st.integers(3, 16), st.data())
def test_lost_pod_tunnels_are_promoted_onto_their_backups(
    n: int, p: int, data: st.DataObject
) -> None:
    lost = data.draw(st.integers(0, p - 1))
    tunnels, before_pods = tunnels_named(n), pods_named(range(p))
    survivors = [pod for i, pod in enumerate(before_pods) if i != lost]
    before = place(tunnels, before_pods, capacity=64000, backups=2)
    after = place(
        tunnels,
        survivors,
        capacity=64000,
        previous=before.active,
        previous_backups=before.backups,
    )
    # the rule: in name order, each lost tunnel goes to its first backup
    # that is below `upper`; nothing else has moved before promotion
    gone = f"gw-{lost}"
    loads = {pod.name: before.loads[pod.name] for pod in survivors}
    for tunnel in sorted(t for t, pod in before.active.items() if pod == gone):
        room = [b for b in before.backups[tunnel] if loads[b] < after.upper]
        if room:
            assert after.active[tunnel] == room[0]
            loads[room[0]] += 1
        assert after.active[tunnel] != gone


@PROPERTY
@given(st.integers(1, 1500), st.integers(1, 12), st.integers(0, 3))
def test_backups_are_on_other_nodes_than_the_active_pod_and_each_other(
    n: int, p: int, count: int
) -> None:
    # two pods per node, so the node rule has something to refuse
    pods = [Pod(f"gw-{i}", f"node-{i // 2}") for i in range(p)]
    node_of = {pod.name: pod.node for pod in pods}
    result = place(tunnels_named(n), pods, capacity=64000, backups=count)
    nodes = len(set(node_of.values()))
    for tunnel, active in result.active.items():
        standby = result.backups[tunnel]
        used = [node_of[active], *(node_of[b] for b in standby)]
        assert len(set(used)) == len(used)
        assert len(standby) == min(count, nodes - 1)


def test_unscheduled_pods_count_as_separate_nodes() -> None:
    pods = [Pod("gw-0"), Pod("gw-1"), Pod("gw-2")]
    result = place(tunnels_named(30), pods, capacity=100, backups=2)
    assert all(len(b) == 2 for b in result.backups.values())


def test_no_pods_leaves_every_tunnel_unplaced() -> None:
    result = place(tunnels_named(5), [], capacity=10)
    assert result.unplaced == tuple(sorted(tunnels_named(5)))
    assert not result.active


def test_adding_a_pod_to_200_moves_at_most_105_percent_of_its_share() -> None:
    n, p = 20000, 200
    tunnels = tunnels_named(n)
    before = place(tunnels, pods_named(range(p)), capacity=64000)
    after = place(
        tunnels,
        pods_named(range(p + 1)),
        capacity=64000,
        previous=before.active,
        previous_backups=before.backups,
    )
    assert moved(before.active, after.active) <= 1.05 * n / (p + 1)
    assert after.loads[f"gw-{p}"] >= after.lower
