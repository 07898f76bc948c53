"""The local platform: the control plane, the real node and the operator in-cluster."""
