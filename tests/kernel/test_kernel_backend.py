"""The kernel XFRM backend in a real Debian kernel with ESP (a QEMU VM).

The host's kernel has no ESP, so the cases run inside one VM boot
(`tests/kernel/guest/guest_kernel_backend.py`) and each is reported here as
a case of its own.
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
    "test_ping_crosses_the_tunnel_and_esp_counters_move[ipv4_in_ipv4]",
    "test_ping_crosses_the_tunnel_and_esp_counters_move[ipv6_in_ipv6]",
    "test_ping_crosses_the_tunnel_and_esp_counters_move[ipv4_in_ipv6]",
    "test_ping_crosses_the_tunnel_and_esp_counters_move[ipv6_in_ipv4]",
    "test_udp_encapsulated_esp_carries_traffic[ipv4]",
    "test_other_algorithms_carry_traffic[chacha20poly1305-ipv4]",
    "test_other_algorithms_carry_traffic[aescbc-ipv4]",
    "test_child_sa_rekey_under_traffic_loses_nothing[ipv4]",
    "test_soft_packet_limit_raises_a_soft_expire_event[ipv4]",
    "test_traffic_on_a_policy_without_sa_raises_an_acquire[ipv4]",
    "test_crypto_driver_names_the_kernel_implementation",
    "test_kernel_data_plane_reports_itself_available",
    "test_status_names_the_kernel_driver_for_each_algorithm",
    "test_overlapping_selectors_are_kept_apart_by_xfrm_interfaces",
]


@pytest.mark.parametrize("case", GUEST_CASES)
def test_in_vm(case: str, kernel_guest_cases: dict[str, GuestCase]) -> None:
    assert_guest_passed(case, kernel_guest_cases)
