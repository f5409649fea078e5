"""Recording on signaling (docs/recording.md), by concern:

- ``lifecycle.py``: start, watch, stop, compile or wait for the Job (``Recordings``)
- ``leases.py``: which replica works on which phase of a recording; the sweeper
- ``tap.py``: the call servers' recording tap over one shared HTTP client
- ``notify.py``: WebSocket messages with signed links, the webhook
- ``access.py``: who may start, stop, list and download
- ``api.py``: the REST API
"""

from parley.signaling.recordings.api import router
from parley.signaling.recordings.leases import LIVE
from parley.signaling.recordings.lifecycle import Recordings

__all__ = ["LIVE", "Recordings", "router"]
