"""The kernel VM for tests: built once, booted once per test session.

One boot runs every guest file; each host-side test then reads the outcome
of its guest case from the report.
"""

from __future__ import annotations

import pytest
from vmsuite import GuestCase, guest_suite

GUEST_FILES = [
    "tests/kernel/guest/guest_kernel_backend.py",
    "tests/kernel/guest/guest_qsgw_kernel.py",
]


@pytest.fixture(scope="session")
def kernel_guest_cases() -> dict[str, GuestCase]:
    return guest_suite(GUEST_FILES, 2400)
