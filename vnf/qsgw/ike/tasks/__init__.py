"""The IKEv2 exchanges, one small module each, run by `qsgw.ike.engine`.

`wire` seals and opens messages for an IKE SA; `dispatch` routes a received
datagram to its SA and exchange; `ike_init`, `intermediate`, `ike_auth`,
`create_child` and `informational` are the initiator and responder halves of
each exchange; `child_sa` sets up Child SAs; `timers` runs retransmission,
liveness checks, rekeying and expiry.
"""
