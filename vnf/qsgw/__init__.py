"""qsgw: a quantum-safe IPsec security gateway.

Packages, from the wire inwards:

- ``qsgw.ike``: the IKEv2 core, sans-I/O (codec, payload rules, SA state
  machines, keymat). It never touches a socket, a clock or the data plane.
- ``qsgw.crypto``: key exchange methods, PRFs, ciphers behind one interface.
- ``qsgw.esp``: the ESP data plane behind one backend interface.
- ``qsgw.daemon``: the I/O shell (sockets, timers, config, control socket, CLI).
- ``qsgw.metrics``: Prometheus exposition fed from events.
"""

__version__ = "0.1.0"
