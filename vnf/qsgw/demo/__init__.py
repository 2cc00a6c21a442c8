"""The embedded demo: two qsgw gateways in two network namespaces.

`qsgw demo` builds a veth-joined pair of namespaces, starts a real gateway
daemon in each, negotiates an IKE SA with X25519 + ML-KEM-768 (RFC 9370)
and a PPK (RFC 8784), sends a ping and a TCP burst through the Child SA,
reports what was negotiated and measured, and removes everything it
created. See docs/demo.md.

Modules: `topology` (namespaces, veth, the data-plane probe), `gateways`
(secrets, configuration, daemons), `traffic` (ping, throughput, ESP
counters), `scenario` (the steps in order), `report` (JSON and text),
`cleanup` (undo on any exit), `inside` (helpers run inside a namespace),
`cli` (the command line).
"""

from __future__ import annotations

from qsgw.demo.cli import add_arguments, main, run

__all__ = ["add_arguments", "main", "run"]
