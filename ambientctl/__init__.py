"""ambientctl: explain how traffic flows through an Istio ambient mesh.

Nothing heavy is imported here: `ambientctl trace --bundle` must start fast.
"""

__version__ = "0.1.0"
