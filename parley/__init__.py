"""Parley: video meetings and live broadcast that run on Kubernetes.

The ``parley`` package is the shared core (configuration, tokens, event schemas, metrics
helpers, the command line). Each deployable is a sub-package from its own top-level folder:
``parley.signaling`` (signaling/), ``parley.media`` (media-node/), ``parley.operator``
(kube-operator/), ``parley.recorder`` (recorder/). Folder names that are also standard-library
modules are hyphenated, so a Python started in the checkout never imports them by accident.
"""

__version__ = "0.1.0"
