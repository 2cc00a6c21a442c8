"""Inbound ESP SPIs from `IkeEngine.new_spi`: never below 256, never one
already handed out or held by a Child SA, and those of gone Child SAs
become free again once the remembered set is pruned."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ike_peers import Link, connection

from qsgw.ike.engine import IkeEngine

PRUNE_AFTER = 4096  # SPIs the engine remembers before it first prunes


def scripted(values: Iterator[int]) -> Callable[[int], bytes]:
    """A random source (the engine's external boundary) playing `values`."""

    def rng(size: int) -> bytes:
        return next(values).to_bytes(size, "big")

    return rng


def engine_drawing(values: list[int]) -> IkeEngine:
    """An engine whose new_spi draws `values` (after its cookie secret)."""
    return IkeEngine([], scripted(iter([0, *values])))


def test_new_spi_skips_values_below_256() -> None:
    engine = engine_drawing([0, 255, 256])

    assert engine.new_spi() == (256).to_bytes(4, "big")


def test_new_spi_never_repeats_an_spi_still_being_negotiated() -> None:
    engine = engine_drawing([0x1000, 0x1000, 0x1000, 0x2000])

    first = engine.new_spi()
    second = engine.new_spi()  # the first has no Child SA yet

    assert (first, second) == ((0x1000).to_bytes(4, "big"), (0x2000).to_bytes(4, "big"))


def test_new_spi_reuses_an_spi_no_child_sa_holds_after_pruning() -> None:
    values = [*range(0x1000, 0x1000 + PRUNE_AFTER), 0x1000]
    engine = engine_drawing(values)
    for _ in range(PRUNE_AFTER):
        engine.new_spi()

    assert engine.new_spi() == (0x1000).to_bytes(4, "big")


def test_new_spi_never_reissues_the_spi_of_an_installed_child_sa() -> None:
    link = Link(connection(initiator=True), connection(initiator=False))
    link.initiate()
    link.run()
    engine = link.i.engine
    (sa,) = engine.sas.values()
    (child,) = sa.children.values()
    held = int.from_bytes(child.inbound_spi, "big")
    fresh = (v for v in range(0x10000, 0x20000) if v != held)
    values = [next(fresh) for _ in range(PRUNE_AFTER)] + [held, 0x30000]
    engine.rng = scripted(iter(values))
    for _ in range(PRUNE_AFTER):
        engine.new_spi()

    assert engine.new_spi() == (0x30000).to_bytes(4, "big")  # pruned, yet held
