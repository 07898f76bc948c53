"""The local platform: control plane and local node."""
