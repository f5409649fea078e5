"""A long-running server's objects from start-up, kept out of the garbage collector's scans.

CPython's cyclic collector walks every tracked object of the generations it collects. Once the
imports and the app are built, `parley up` holds 140,000 such objects (aiortc, PyAV, FastAPI,
the app's routes), and a full collection walked them all in 66 ms, on the event loop that
answers joins and forwards media (a pause every forwarded stream sees); in a bench of 16
call-server joins three full collections took 17, 49 and 121 ms (docs/benchmarks.md,
"2026-12-04 (6)"). They live as long as the process, so ``gc.freeze()`` moves them to the
permanent generation no collection walks (what the Python docs advise for a server's start-up
state): a full collection right after it takes under 0.1 ms. What the process makes later
(sessions, connections, legs) is collected as before.
"""

from __future__ import annotations

import gc


def freeze_start_up() -> None:
    """Collect what start-up left as garbage, then exempt the rest from later collections."""
    gc.collect()
    gc.freeze()
