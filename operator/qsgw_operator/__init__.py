"""qsgw_operator: the Kubernetes operator for IPsecTunnelGroup resources."""
