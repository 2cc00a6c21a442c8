"""kopf wiring: watch events only mark a group dirty; workers reconcile.

    kopf run --standalone -m qsgw_operator.handlers --all-namespaces

Handlers are `on.event` only, so kopf puts no finalizer and no progress
annotation on anything: deleting a group or its namespace never waits for
the operator, and the garbage collector removes the children through their
owner references. Events for a group, its tunnels and its pods all funnel
into one de-duplicating queue; a periodic resync covers missed events.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
from collections.abc import Mapping
from typing import Any

import kopf

from qsgw_operator.kube import ApiKube, load_configuration
from qsgw_operator.models import GROUP, VERSION
from qsgw_operator.reconcile import reconcile
from qsgw_operator.render import GROUP_LABEL

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # namespace, group name

WORKERS = int(os.environ.get("QSGW_OPERATOR_WORKERS", "4"))
RESYNC_SECONDS = float(os.environ.get("QSGW_OPERATOR_RESYNC_SECONDS", "30"))
RETRY_SECONDS = 2.0


class DirtyQueue:
    """Groups waiting for a pass; a group is never in two workers at once."""

    def __init__(self) -> None:
        self.pending: dict[Key, None] = {}
        self.busy: set[Key] = set()
        self.changed = asyncio.Event()

    def add(self, key: Key) -> None:
        self.pending[key] = None
        self.changed.set()

    async def take(self) -> Key:
        while True:
            for key in self.pending:
                if key not in self.busy:
                    del self.pending[key]
                    self.busy.add(key)
                    return key
            self.changed.clear()
            await self.changed.wait()

    def done(self, key: Key) -> None:
        self.busy.discard(key)
        self.changed.set()


class Operator:
    def __init__(self, kube: ApiKube) -> None:
        self.kube = kube
        self.queue = DirtyQueue()
        # matchLabels of every group seen, to route tunnel events
        self.selectors: dict[Key, Mapping[str, str]] = {}
        # groups with a pod on each node, to route node events
        self.on_node: dict[str, set[Key]] = {}
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for _ in range(WORKERS):
            self.tasks.append(asyncio.create_task(self._work()))
        self.tasks.append(asyncio.create_task(self._resync()))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            key = await self.queue.take()
            try:
                await asyncio.to_thread(reconcile, self.kube, *key, _now())
            except Exception:
                logger.exception("group %s/%s: pass failed, retrying", *key)
                asyncio.get_running_loop().call_later(
                    RETRY_SECONDS, self.queue.add, key
                )
            finally:
                self.queue.done(key)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(RESYNC_SECONDS)
            for key in list(self.selectors):
                self.queue.add(key)

    def neighbours_changed(self, key: Key) -> None:
        """A group came, went or changed its selector: the other groups of
        its namespace may gain or lose tunnels it shares with them (a tunnel
        goes to the oldest group selecting it)."""
        for other in self.selectors:
            if other[0] == key[0] and other != key:
                self.queue.add(other)

    def groups_selecting(self, namespace: str, labels: Mapping[str, str]) -> list[Key]:
        return [
            key
            for key, wanted in self.selectors.items()
            if key[0] == namespace
            and all(labels.get(k) == v for k, v in wanted.items())
        ]


def _now() -> str:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return now.isoformat().replace("+00:00", "Z")


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf-documented cures for watches that go silent and calls that hang
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 70
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=GROUP
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP
    )
    # one "Handler succeeded" line per watch event would drown the logs
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    memo.operator = Operator(ApiKube(load_configuration()))
    memo.operator.start()


@kopf.on.cleanup()
async def shut_down(memo: kopf.Memo, **_: Any) -> None:
    await memo.operator.stop()


@kopf.on.event(GROUP, VERSION, "ipsectunnelgroups")
def group_event(
    type: str,
    name: str,
    namespace: str | None,
    spec: kopf.Spec,
    memo: Any,
    **_: Any,
) -> None:
    operator: Operator = memo.operator
    key = (namespace or "", name)
    if type == "DELETED":
        operator.selectors.pop(key, None)
        operator.neighbours_changed(key)
        return
    selector = dict(spec.get("tunnelSelector", {}).get("matchLabels", {}))
    if operator.selectors.get(key) != selector:
        operator.neighbours_changed(key)
    operator.selectors[key] = selector
    operator.queue.add(key)


@kopf.on.event(GROUP, VERSION, "ipsectunnels")
def tunnel_event(
    namespace: str | None,
    labels: Mapping[str, str],
    status: kopf.Status,
    memo: Any,
    **_: Any,
) -> None:
    operator: Operator = memo.operator
    keys = operator.groups_selecting(namespace or "", labels)
    previous = status.get("group")
    if previous:  # a tunnel relabelled away must leave its old group
        keys.append((namespace or "", str(previous)))
    for key in keys:
        operator.queue.add(key)


@kopf.on.event("", "v1", "pods", labels={GROUP_LABEL: kopf.PRESENT})
def pod_event(
    namespace: str | None,
    labels: Mapping[str, str],
    spec: kopf.Spec,
    memo: Any,
    **_: Any,
) -> None:
    operator: Operator = memo.operator
    key = (namespace or "", labels[GROUP_LABEL])
    node = spec.get("nodeName")
    if node:
        operator.on_node.setdefault(str(node), set()).add(key)
    operator.queue.add(key)


@kopf.on.event("", "v1", "nodes")
def node_event(type: str, name: str, status: kopf.Status, memo: Any, **_: Any) -> None:
    """A node going NotReady or away: its gateways' groups need a pass now
    (its pods may still say Ready until the pod GC runs)."""
    operator: Operator = memo.operator
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions", [])
    )
    if type == "DELETED" or not ready:
        for key in operator.on_node.get(name, ()):
            operator.queue.add(key)
