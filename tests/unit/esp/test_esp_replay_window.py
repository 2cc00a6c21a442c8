"""The anti-replay window (RFC 4303 §3.4.3, Appendix A) against a simple
model: a set of every sequence number accepted so far."""

from __future__ import annotations

import random

import pytest

from qsgw.esp.packet import ReplayWindow


def _model_accepts(seen: set[int], top: int, size: int, sequence: int) -> bool:
    if sequence == 0 or sequence in seen:
        return False
    return sequence > top or top - sequence < size


def _stream(rng: random.Random, size: int, count: int, start: int) -> list[int]:
    sequences: list[int] = []
    top = start
    for _ in range(count):
        roll = rng.random()
        if roll < 0.05 and sequences:
            sequences.append(rng.choice(sequences[-50:]))  # duplicate
        elif roll < 0.25:
            sequences.append(max(1, top - rng.randrange(int(size * 1.5) + 1)))
        elif roll < 0.26:
            top += rng.randrange(size, 3 * size)  # a jump
            sequences.append(top)
        else:
            top += 1
            sequences.append(top)
    return sequences


@pytest.mark.parametrize("size", [32, 64, 1024, 4096])
@pytest.mark.parametrize("esn", [False, True])
def test_window_matches_the_model_on_a_reordered_stream(size: int, esn: bool) -> None:
    rng = random.Random(size * 2 + esn)
    start = 2**32 - 3 * size if esn else 0
    window = ReplayWindow(size, esn=esn)
    window.top = start
    seen: set[int] = set()

    for sequence in _stream(rng, size, 20_000, start):
        inferred = window.infer(sequence & 0xFFFFFFFF)
        if inferred != sequence:
            # ESN: only packets older than the window are misinferred, and
            # those fail the ICV in the real path
            assert window.top - sequence >= size
            continue
        expected = _model_accepts(seen, window.top, size, sequence)
        assert window.check(sequence) == expected
        if expected:
            window.update(sequence)
            seen.add(sequence)


def test_window_of_4096_accepts_a_packet_4095_behind_the_top() -> None:
    window = ReplayWindow(4096, esn=False)
    window.update(5000)
    assert window.check(5000 - 4095)
    assert not window.check(5000 - 4096)


def test_checking_alone_never_moves_the_window() -> None:
    window = ReplayWindow(64, esn=True)
    window.check(1_000)
    assert window.top == 0
    assert window.check(1)


def test_esn_case_a_infers_the_next_subspace_below_the_window() -> None:
    window = ReplayWindow(64, esn=True)
    window.top = (5 << 32) | 0xFFFFFF00
    assert window.infer(0xFFFFFF00 - 10) == (5 << 32) | (0xFFFFFF00 - 10)
    assert window.infer(3) == (6 << 32) | 3


def test_esn_case_b_infers_the_previous_subspace_inside_the_window() -> None:
    window = ReplayWindow(64, esn=True)
    window.top = (5 << 32) | 10
    assert window.infer(0xFFFFFFF0) == (4 << 32) | 0xFFFFFFF0
    assert window.infer(11) == (5 << 32) | 11


def test_esn_without_a_window_is_refused() -> None:
    with pytest.raises(ValueError, match="ESN"):
        ReplayWindow(0, esn=True)
