"""Runs KernelBackend calls inside one network namespace of the test VM.

    ip netns exec NS python xfrm_tool.py install SPEC.json
    ip netns exec NS python xfrm_tool.py counters SPI DESTINATION
    ip netns exec NS python xfrm_tool.py delete SPI DESTINATION

The SAs and policies stay in the namespace's kernel after the process ends,
so one short process per step is enough.
"""

from __future__ import annotations

import json
import sys
from ipaddress import ip_address, ip_network

from qsgw.esp.backend import (
    Direction,
    EspAlgorithm,
    EspIntegrity,
    PolicySpec,
    SaSpec,
    UdpEncapsulation,
)
from qsgw.esp.kernel import KernelBackend


def sa_from(d: dict) -> SaSpec:
    encap = d.get("encap")
    return SaSpec(
        spi=d["spi"],
        direction=Direction(d["direction"]),
        source=ip_address(d["source"]),
        destination=ip_address(d["destination"]),
        algorithm=EspAlgorithm(d.get("algorithm", "aesgcm16")),
        encryption_key=bytes.fromhex(d["key"]),
        key_bits=d.get("key_bits", 256),
        integrity=EspIntegrity(d.get("integrity", "none")),
        integrity_key=bytes.fromhex(d.get("integrity_key", "")),
        esn=d.get("esn", True),
        replay_window=d.get("replay_window", 1024),
        encapsulation=UdpEncapsulation(*encap) if encap else None,
        reqid=d.get("reqid", 1),
        if_id=d.get("if_id", 0),
    )


def policy_from(d: dict) -> PolicySpec:
    return PolicySpec(
        direction=Direction(d["direction"]),
        local=ip_network(d["local"]),
        remote=ip_network(d["remote"]),
        tunnel_source=ip_address(d["tunnel_source"]),
        tunnel_destination=ip_address(d["tunnel_destination"]),
        reqid=d.get("reqid", 1),
        if_id=d.get("if_id", 0),
    )


def main() -> None:
    backend = KernelBackend()
    backend.start(lambda event: None)
    try:
        command = sys.argv[1]
        if command == "install":
            with open(sys.argv[2]) as f:
                spec = json.load(f)
            for sa in spec.get("sas", []):
                backend.add_sa(sa_from(sa))
            for policy in spec.get("policies", []):
                backend.add_policy(policy_from(policy))
            for route in spec.get("routes", []):
                backend.install_route(
                    ip_network(route["remote"]),
                    ip_address(route["source"]),
                    route.get("if_id", 0),
                )
        elif command == "counters":
            c = backend.counters(int(sys.argv[2], 0), ip_address(sys.argv[3]))
            print(
                json.dumps(
                    c.__dict__
                    if hasattr(c, "__dict__")
                    else {
                        "bytes": c.bytes,
                        "packets": c.packets,
                        "sequence": c.sequence,
                        "replay_window": c.replay_window,
                        "replay_errors": c.replay_errors,
                        "integrity_errors": c.integrity_errors,
                    }
                )
            )
        elif command == "delete":
            backend.delete_sa(int(sys.argv[2], 0), ip_address(sys.argv[3]))
        elif command == "allocate":
            spi = backend.allocate_spi(ip_address(sys.argv[2]), ip_address(sys.argv[3]))
            print(spi)
    finally:
        backend.close()


if __name__ == "__main__":
    main()
