"""Which pod carries which tunnel, and which pods stand by for it.

Rendezvous hashing (highest random weight) ranks the pods for every tunnel:
score(t, p) = mix(hash(t) XOR hash(p)), highest first. Rendezvous ranking
alone moves only the tunnels of a removed pod and only the tunnels that now
prefer an added pod, but its loads vary by about sqrt(n/p). Bounded loads
fix that: every pod carries between `lower` and `upper` tunnels,

    upper = min(capacity, ceil(n/p * (1 + epsilon)))
    lower = min(upper, floor(n/p * (1 - epsilon)))

and placement is incremental. Given the previous assignment:

1. every tunnel stays on its previous pod if that pod still exists;
2. a pod above `upper` sheds the tunnels it ranks lowest;
3. a tunnel whose pod is gone goes to its previous backup if that pod is
   below `upper` (promotion on pod loss: the backup holds its state) and
   stays there for this run;
4. every other tunnel without a pod (new or shed) goes to its best-ranked
   pod below `upper`;
5. a pod below `lower` pulls tunnels from pods above `lower`: first those
   placed in this run (moving them again costs nothing), then the ones that
   rank the puller highest.

On scale-up this moves exactly max(total excess, total deficit) tunnels,
the least any placement within the bounds can move; on scale-down or pod
loss only the gone pods' tunnels move, plus pulls up to `lower`.

Backups are pure rendezvous: the best-ranked pods on nodes other than the
active pod's node (and each other's), so a lost pod's tunnels fall on many
survivors, and a backup changes only when its pod goes or a better one
comes. All orders are fixed by names, so the result is a function of the
inputs alone.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

U32 = npt.NDArray[np.uint32]
Ints = npt.NDArray[np.int64]
Flags = npt.NDArray[np.bool_]

DEFAULT_EPSILON = 0.05
CHUNK = 8192


@dataclass(frozen=True, slots=True)
class Pod:
    """A gateway pod that can carry tunnels; `node` is '' while unscheduled."""

    name: str
    node: str = ""


@dataclass(frozen=True, slots=True)
class Placement:
    active: Mapping[str, str]
    backups: Mapping[str, tuple[str, ...]]
    unplaced: tuple[str, ...]
    lower: int
    upper: int
    loads: Mapping[str, int] = field(default_factory=dict)


def key_hash(names: Iterable[str]) -> U32:
    """A 32-bit hash per name, the same on every run and machine."""
    digests = b"".join(
        hashlib.blake2b(name.encode(), digest_size=4).digest() for name in names
    )
    return np.frombuffer(digests, dtype="<u4").astype(np.uint32)


def mix(z: U32) -> U32:
    """A 32-bit avalanche finalizer, in place: every input bit reaches every
    output bit, so XOR-related inputs give unrelated scores."""
    tmp = np.empty_like(z)
    for shift, factor in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
        np.right_shift(z, np.uint32(shift), out=tmp)
        np.bitwise_xor(z, tmp, out=z)
        np.multiply(z, np.uint32(factor), out=z)
    np.right_shift(z, np.uint32(16), out=tmp)
    np.bitwise_xor(z, tmp, out=z)
    return z


def bounds(tunnels: int, pods: int, capacity: int, epsilon: float) -> tuple[int, int]:
    """The (lower, upper) load every pod must respect."""
    if pods == 0:
        return 0, 0
    share = tunnels / pods
    upper = min(capacity, math.ceil(share * (1 + epsilon)))
    lower = min(upper, math.floor(share * (1 - epsilon)))
    return lower, upper


class _Ranker:
    """Rendezvous scores of tunnels (rows) against pods (columns)."""

    def __init__(self, tunnels: Sequence[str], pods: Sequence[str]) -> None:
        self.tunnel_hash = key_hash(tunnels)
        self.pod_hash = key_hash(pods)

    def scores(self, rows: Ints) -> U32:
        return mix(self.tunnel_hash[rows][:, None] ^ self.pod_hash[None, :])

    def column(self, rows: Ints, pod: int) -> U32:
        return mix(self.tunnel_hash[rows] ^ self.pod_hash[pod])

    def ranking(self, row: int) -> list[int]:
        scores = self.scores(np.array([row], dtype=np.int64))[0]
        return [int(i) for i in np.argsort(scores, kind="stable")[::-1]]


class _State:
    def __init__(self, n: int, p: int, lower: int, upper: int) -> None:
        self.assign: Ints = np.full(n, -1, dtype=np.int64)
        self.load: Ints = np.zeros(p, dtype=np.int64)
        # tunnels placed in this run that may still move at no extra cost
        self.free: Flags = np.zeros(n, dtype=np.bool_)
        # tunnels promoted onto their standby: they stay there
        self.pinned: Flags = np.zeros(n, dtype=np.bool_)
        self.lower = lower
        self.upper = upper

    def recount(self) -> None:
        placed = self.assign[self.assign >= 0]
        self.load[:] = np.bincount(placed, minlength=len(self.load))


def _keep_previous(
    state: _State,
    tunnels: Sequence[str],
    index: Mapping[str, int],
    previous: Mapping[str, str],
) -> None:
    """Step 1: every tunnel stays where it was while its pod exists."""
    rows = [
        (row, index.get(previous.get(name, ""), -1)) for row, name in enumerate(tunnels)
    ]
    state.assign[:] = [pod for _, pod in rows]
    state.recount()


def _shed(state: _State, ranker: _Ranker) -> None:
    """Pods above `upper` let go first of tunnels placed in this run, then
    of the tunnels they rank lowest."""
    for pod in np.flatnonzero(state.load > state.upper).tolist():
        rows = np.flatnonzero(state.assign == pod)
        keys = (ranker.column(rows, pod), ~state.free[rows])
        order = np.lexsort(keys)
        excess = int(state.load[pod]) - state.upper
        gone = rows[order[:excess]]
        state.assign[gone] = -1
        state.free[gone] = False
        state.load[pod] -= excess


def _promote(
    state: _State,
    rows: Ints,
    tunnels: Sequence[str],
    index: Mapping[str, int],
    previous_backups: Mapping[str, Sequence[str]],
) -> None:
    """A tunnel whose pod is gone goes to its standby: it holds the state."""
    for row in rows.tolist():
        for backup in previous_backups.get(tunnels[row], ()):
            pod = index.get(backup, -1)
            if pod >= 0 and state.load[pod] < state.upper:
                state.assign[row] = pod
                state.load[pod] += 1
                state.pinned[row] = True
                break


def _place_orphans(state: _State, ranker: _Ranker) -> None:
    """Each tunnel without a pod goes to its best-ranked pod; overfull pods
    then hand their newcomers on to the next pod with room."""
    orphans = np.flatnonzero(state.assign < 0)
    for start in range(0, len(orphans), CHUNK):
        rows = orphans[start : start + CHUNK]
        state.assign[rows] = np.argmax(ranker.scores(rows), axis=1)
    state.free[orphans] = True
    state.recount()
    _shed(state, ranker)

    load = state.load.tolist()
    for row in np.flatnonzero(state.assign < 0).tolist():
        pod = next((p for p in ranker.ranking(row) if load[p] < state.upper), -1)
        if pod >= 0:
            state.assign[row] = pod
            state.free[row] = True
            load[pod] += 1
    state.load[:] = load


def _fill(state: _State, ranker: _Ranker) -> None:
    """Pods below `lower` pull tunnels from pods above `lower`: first those
    placed in this run, then the ones that rank the puller highest; never a
    tunnel just promoted onto its standby."""
    for pod in np.flatnonzero(state.load < state.lower).tolist():
        rows = np.flatnonzero((state.assign >= 0) & ~state.pinned)
        order = np.lexsort((ranker.column(rows, pod), state.free[rows]))[::-1]
        load = state.load.tolist()
        for row in rows[order].tolist():
            if load[pod] >= state.lower:
                break
            donor = int(state.assign[row])
            if donor != pod and load[donor] > state.lower:
                state.assign[row] = pod
                load[donor] -= 1
                load[pod] += 1
        state.load[:] = load


def _backups(
    state: _State, ranker: _Ranker, nodes: Sequence[str], count: int
) -> npt.NDArray[np.int64]:
    """Best-ranked pods on other nodes than the active pod and each other."""
    n, p = len(state.assign), len(nodes)
    node_id = _node_ids(nodes)
    out = np.full((n, count), -1, dtype=np.int64)
    placed = np.flatnonzero(state.assign >= 0)
    for start in range(0, len(placed), CHUNK):
        rows = placed[start : start + CHUNK]
        scores = ranker.scores(rows)
        taken = node_id[state.assign[rows]]
        scores[node_id[None, :] == taken[:, None]] = 0
        for slot in range(min(count, p - 1)):
            best = np.argmax(scores, axis=1)
            ok = scores[np.arange(len(rows)), best] > 0
            out[rows[ok], slot] = best[ok]
            scores[node_id[None, :] == node_id[best][:, None]] = 0
    return out


def _node_ids(nodes: Sequence[str]) -> Ints:
    """A number per node; an unscheduled pod counts as a node of its own."""
    known: dict[str, int] = {}
    ids = []
    for i, node in enumerate(nodes):
        ids.append(known.setdefault(node, len(known)) if node else -1 - i)
    return np.array(ids, dtype=np.int64)


def place(
    tunnels: Iterable[str],
    pods: Iterable[Pod],
    *,
    capacity: int,
    backups: int = 1,
    previous: Mapping[str, str] | None = None,
    previous_backups: Mapping[str, Sequence[str]] | None = None,
    epsilon: float = DEFAULT_EPSILON,
) -> Placement:
    """Place `tunnels` on `pods`; see the module docstring for the rules."""
    names = sorted(set(tunnels))
    slots = sorted({pod.name: pod for pod in pods}.values(), key=lambda p: p.name)
    lower, upper = bounds(len(names), len(slots), capacity, epsilon)
    if not slots:
        return Placement({}, {}, tuple(names), lower, upper)

    pod_names = [pod.name for pod in slots]
    index = {name: i for i, name in enumerate(pod_names)}
    ranker = _Ranker(names, pod_names)
    state = _State(len(names), len(slots), lower, upper)

    _keep_previous(state, names, index, previous or {})
    lost = np.flatnonzero(state.assign < 0)
    _shed(state, ranker)
    _promote(state, lost, names, index, previous_backups or {})
    _place_orphans(state, ranker)
    _fill(state, ranker)

    standby = _backups(state, ranker, [pod.node for pod in slots], backups)
    return _result(state, names, pod_names, standby)


def _result(
    state: _State, names: Sequence[str], pods: Sequence[str], standby: Ints
) -> Placement:
    assign = state.assign.tolist()
    placed = [row for row, pod in enumerate(assign) if pod >= 0]
    active = {names[row]: pods[assign[row]] for row in placed}

    # -1 (no standby found) indexes the trailing '' and is dropped below
    table = np.array([*pods, ""], dtype=object)
    rows = list(map(tuple, table[standby].tolist()))
    for row in np.flatnonzero((standby < 0).any(axis=1)).tolist():
        rows[row] = tuple(name for name in rows[row] if name)
    backups = {names[row]: rows[row] for row in placed}

    unplaced = tuple(names[row] for row, pod in enumerate(assign) if pod < 0)
    loads = dict(zip(pods, state.load.tolist(), strict=True))
    return Placement(active, backups, unplaced, state.lower, state.upper, loads)


def moved(before: Mapping[str, str], after: Mapping[str, str]) -> int:
    """How many tunnels present in both changed pods."""
    return sum(1 for t, pod in after.items() if t in before and before[t] != pod)
