"""Two qsgw daemons with the kernel data plane, in a Debian kernel VM.

The cases run inside one VM boot (`tests/kernel/guest/guest_qsgw_kernel.py`):
hybrid ML-KEM + PPK IKE SAs over IPv4 and IPv6 whose Child SAs the kernel
carries in all four inner/outer combinations, and a Child SA rekey under
traffic that loses nothing.
"""

from __future__ import annotations

import os

import pytest
from vmsuite import GuestCase, assert_guest_passed

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="the VM's 9p share needs root"),
]

GUEST_CASES = [
    "test_traffic_crosses_the_kernel_tunnel[v4-in-v4]",
    "test_traffic_crosses_the_kernel_tunnel[v6-in-v4]",
    "test_traffic_crosses_the_kernel_tunnel[v6-in-v6]",
    "test_traffic_crosses_the_kernel_tunnel[v4-in-v6]",
    "test_child_sa_rekey_under_traffic_loses_nothing",
]


@pytest.mark.parametrize("case", GUEST_CASES)
def test_in_vm(case: str, kernel_guest_cases: dict[str, GuestCase]) -> None:
    assert_guest_passed(case, kernel_guest_cases)
