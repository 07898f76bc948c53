"""ModelCycle: the machine-learning lifecycle on Kubernetes as custom resources."""

__version__ = "0.1.0"

GROUP = "modelcycle.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
