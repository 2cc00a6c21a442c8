"""XFRM netlink messages (include/uapi/linux/xfrm.h) as pyroute2 classes.

pyroute2 has the NETLINK_XFRM protocol number and its message machinery but
no XFRM state or policy messages; they are declared here field by field, with
the kernel's padding written out (offsets checked against the UAPI header
with offsetof on x86_64). The kernel backend encodes requests with these
classes and decodes replies, expiry and acquire notifications with them.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import ClassVar

from pyroute2.netlink import nla, nlmsg

IPAddress = IPv4Address | IPv6Address

# message types
XFRM_MSG_NEWSA = 0x10
XFRM_MSG_DELSA = 0x11
XFRM_MSG_GETSA = 0x12
XFRM_MSG_NEWPOLICY = 0x13
XFRM_MSG_DELPOLICY = 0x14
XFRM_MSG_GETPOLICY = 0x15
XFRM_MSG_ALLOCSPI = 0x16
XFRM_MSG_ACQUIRE = 0x17
XFRM_MSG_EXPIRE = 0x18
XFRM_MSG_UPDPOLICY = 0x19
XFRM_MSG_UPDSA = 0x1A
XFRM_MSG_POLEXPIRE = 0x1B

# multicast groups
XFRMNLGRP_ACQUIRE = 1
XFRMNLGRP_EXPIRE = 2

# policy directions and flags
XFRM_POLICY_IN = 0
XFRM_POLICY_OUT = 1
XFRM_POLICY_FWD = 2
XFRM_POLICY_ALLOW = 0
XFRM_MODE_TUNNEL = 1
XFRM_STATE_ESN = 128
XFRM_STATE_AF_UNSPEC = 32
XFRM_INF = 2**64 - 1
UDP_ENCAP_ESPINUDP = 2
IPPROTO_ESP = 50

_SELECTOR = (
    ("sel_daddr", "16s"),
    ("sel_saddr", "16s"),
    ("sel_dport", ">H"),
    ("sel_dport_mask", ">H"),
    ("sel_sport", ">H"),
    ("sel_sport_mask", ">H"),
    ("sel_family", "H"),
    ("sel_prefixlen_d", "B"),
    ("sel_prefixlen_s", "B"),
    ("sel_proto", "B"),
    ("__sel_pad", "3x"),
    ("sel_ifindex", "i"),
    ("sel_user", "I"),
)  # 56 octets
_ID = (
    ("id_daddr", "16s"),
    ("id_spi", ">I"),
    ("id_proto", "B"),
    ("__id_pad", "3x"),
)  # 24 octets
_LIFETIME_CFG = tuple(
    (f"lft_{name}", "Q")
    for name in (
        "soft_byte_limit",
        "hard_byte_limit",
        "soft_packet_limit",
        "hard_packet_limit",
        "soft_add_expires_seconds",
        "hard_add_expires_seconds",
        "soft_use_expires_seconds",
        "hard_use_expires_seconds",
    )
)  # 64 octets
_LIFETIME_CUR = tuple(
    (f"cur_{name}", "Q") for name in ("bytes", "packets", "add_time", "use_time")
)  # 32 octets
_USERSA_INFO = (
    *_SELECTOR,
    *_ID,
    ("saddr", "16s"),
    *_LIFETIME_CFG,
    *_LIFETIME_CUR,
    ("stats_replay_window", "I"),
    ("stats_replay", "I"),
    ("stats_integrity_failed", "I"),
    ("seq", "I"),
    ("reqid", "I"),
    ("family", "H"),
    ("mode", "B"),
    ("replay_window", "B"),
    ("flags", "B"),
    ("__sa_pad", "7x"),
)  # 224 octets
_USERPOLICY_INFO = (
    *_SELECTOR,
    *_LIFETIME_CFG,
    *_LIFETIME_CUR,
    ("priority", "I"),
    ("index", "I"),
    ("dir", "B"),
    ("action", "B"),
    ("flags", "B"),
    ("share", "B"),
    ("__pol_pad", "4x"),
)  # 168 octets


class _xfrm_attrs(nlmsg):
    """The XFRMA_* attributes shared by SA and policy messages."""

    prefix = "XFRMA_"
    # pyroute2 fills unset fields with 0, which '16s' cannot take
    defaults: ClassVar[dict[str, bytes]] = {
        name: bytes(16)
        for name in ("sel_daddr", "sel_saddr", "id_daddr", "saddr", "daddr")
    }
    nla_map = (
        (0, "XFRMA_UNSPEC", "none"),
        (1, "XFRMA_ALG_AUTH", "hex"),
        (2, "XFRMA_ALG_CRYPT", "xfrm_algo"),
        (4, "XFRMA_ENCAP", "xfrm_encap_tmpl"),
        (5, "XFRMA_TMPL", "xfrm_user_tmpl"),
        (10, "XFRMA_REPLAY_VAL", "xfrm_replay_state"),
        (18, "XFRMA_ALG_AEAD", "xfrm_algo_aead"),
        (20, "XFRMA_ALG_AUTH_TRUNC", "xfrm_algo_auth"),
        (21, "XFRMA_MARK", "xfrm_mark"),
        (23, "XFRMA_REPLAY_ESN_VAL", "xfrm_replay_state_esn"),
        (24, "XFRMA_SA_EXTRA_FLAGS", "uint32"),
        (31, "XFRMA_IF_ID", "uint32"),
    )

    class xfrm_algo(nla):
        fields = (("alg_name", "64s"), ("alg_key_len", "I"), ("alg_key", "s"))

    class xfrm_algo_auth(nla):
        fields = (
            ("alg_name", "64s"),
            ("alg_key_len", "I"),
            ("alg_trunc_len", "I"),
            ("alg_key", "s"),
        )

    class xfrm_algo_aead(nla):
        fields = (
            ("alg_name", "64s"),
            ("alg_key_len", "I"),
            ("alg_icv_len", "I"),
            ("alg_key", "s"),
        )

    class xfrm_encap_tmpl(nla):
        fields = (
            ("encap_type", "H"),
            ("encap_sport", ">H"),
            ("encap_dport", ">H"),
            ("__encap_pad", "2x"),
            ("encap_oa", "16s"),
        )

    class xfrm_user_tmpl(nla):
        fields = (
            *_ID,
            ("family", "H"),
            ("__tmpl_pad1", "2x"),
            ("saddr", "16s"),
            ("reqid", "I"),
            ("mode", "B"),
            ("share", "B"),
            ("optional", "B"),
            ("__tmpl_pad2", "1x"),
            ("aalgos", "I"),
            ("ealgos", "I"),
            ("calgos", "I"),
        )

    class xfrm_replay_state(nla):
        fields = (("oseq", "I"), ("seq", "I"), ("bitmap", "I"))

    class xfrm_replay_state_esn(nla):
        fields = (
            ("bmp_len", "I"),
            ("oseq", "I"),
            ("seq", "I"),
            ("oseq_hi", "I"),
            ("seq_hi", "I"),
            ("replay_window", "I"),
            ("bmp", "s"),
        )

    class xfrm_mark(nla):
        fields = (("value", "I"), ("mask", "I"))


class xfrm_usersa_info(_xfrm_attrs):
    """NEWSA / UPDSA requests and SA dumps."""

    fields = _USERSA_INFO


class xfrm_usersa_id(_xfrm_attrs):
    """DELSA / GETSA requests."""

    fields = (
        ("daddr", "16s"),
        ("spi", ">I"),
        ("family", "H"),
        ("proto", "B"),
        ("__id_pad", "1x"),
    )


class xfrm_userspi_info(_xfrm_attrs):
    """ALLOCSPI requests."""

    fields = (*_USERSA_INFO, ("min", "I"), ("max", "I"))


class xfrm_userpolicy_info(_xfrm_attrs):
    """NEWPOLICY / UPDPOLICY requests."""

    fields = _USERPOLICY_INFO


class xfrm_userpolicy_id(_xfrm_attrs):
    """DELPOLICY requests."""

    fields = (*_SELECTOR, ("index", "I"), ("dir", "B"), ("__pid_pad", "3x"))


class xfrm_user_expire(_xfrm_attrs):
    """EXPIRE notifications: the SA and whether the hard limit was hit."""

    fields = (*_USERSA_INFO, ("hard", "B"), ("__exp_pad", "7x"))


class xfrm_user_acquire(_xfrm_attrs):
    """ACQUIRE notifications: traffic matched a policy that has no SA."""

    fields = (
        *_ID,
        ("saddr", "16s"),
        *_SELECTOR,
        *tuple(
            (f"_{name}" if name.startswith("_") else f"pol_{name}", fmt)
            for name, fmt in _USERPOLICY_INFO
        ),
        ("aalgos", "I"),
        ("ealgos", "I"),
        ("calgos", "I"),
        ("acq_seq", "I"),
    )


def family_of(address: IPAddress) -> int:
    return socket.AF_INET if address.version == 4 else socket.AF_INET6


def pack_address(address: IPAddress) -> bytes:
    """An address as xfrm_address_t: 16 octets, IPv4 in the first four."""
    return address.packed.ljust(16, b"\x00")


def unpack_address(data: bytes, family: int) -> IPAddress:
    return ip_address(data[:4] if family == socket.AF_INET else data[:16])
