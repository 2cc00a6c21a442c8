"""The kernel VM for tests: built once, booted once per test session."""

from __future__ import annotations

import pytest
from vmsuite import GuestCase, guest_suite


@pytest.fixture(scope="session")
def kernel_backend_cases() -> dict[str, GuestCase]:
    return guest_suite(["tests/kernel/guest/guest_kernel_backend.py"], 1500)
