"""Compile one recording: the file creator's unit of work, as a function and as a process.

Its only input and output is the store (chunks in; files, state and progress into the manifest),
so the same code runs on a signaling worker thread (`parley up`) or as a Kubernetes Job per
recording: ``python -m parley.recorder.job --store s3://bucket/prefix --recording <id>``
(exit 0 when ready, 1 when failed). A Job isolates one compilation's CPU and is retried if the
pod dies; signaling only has to notice the manifest turn ``ready``. The operator creates that Job
for each ``pending/<id>`` marker and alone clears the marker once the manifest is final, so this
process touches nothing but the recording itself (a retried pod finds the marker unchanged).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from . import state
from .creator import create_files
from .store import Store, default_store_url, open_store

log = logging.getLogger("parley.recorder.job")


def compile_recording(store: Store, recording: str, *, fps: int = 15) -> dict[str, Any]:
    """Create the files; returns the final manifest (``ready`` or ``failed`` with ``error``)."""
    manifest = state.load(store, recording)
    manifest.update(state="processing", progress=0.0)
    state.save(store, manifest)
    last = [0.0]

    def progress(fraction: float) -> None:  # at most every 5 %: a store write each time
        if fraction - last[0] >= 0.05 or fraction >= 1.0:
            last[0] = fraction
            state.save(store, {**manifest, "progress": round(fraction, 3)})

    try:
        result = create_files(store, recording, progress=progress, fps=fps)
    except ValueError as exc:  # nothing to compile: no media reached the tap
        log.warning("recording %s failed: %s", recording, exc)
        manifest.update(state="failed", error=str(exc))
        state.save(store, manifest)
        return manifest
    except Exception as exc:
        log.exception("recording %s failed", recording)
        manifest.update(state="failed", error=f"{type(exc).__name__}: {exc}")
        state.save(store, manifest)
        return manifest
    seen = [t["participant"] for t in result["tracks"]]
    manifest.update(state="ready", progress=1.0, duration=result["composite"]["duration"],
                    files={"composite": result["composite"]["file"], "tracks": result["tracks"]},
                    participants=list(dict.fromkeys(manifest.get("participants", []) + seen)))
    state.save(store, manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m parley.recorder.job", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recording", required=True)
    ap.add_argument("--store", default=None, help="file:///dir or s3://bucket/prefix (default: "
                    "$PARLEY_RECORDING_STORE or $PARLEY_DATA_DIR/recordings)")
    ap.add_argument("--fps", type=int, default=int(os.environ.get("PARLEY_RECORDING_FPS") or 15))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    store = open_store(args.store or default_store_url(
        Path(os.environ.get("PARLEY_DATA_DIR") or "var")))
    manifest = compile_recording(store, args.recording, fps=args.fps)
    print(json.dumps({k: manifest.get(k) for k in ("id", "state", "duration", "error")}))
    return 0 if manifest["state"] == "ready" else 1


if __name__ == "__main__":
    sys.exit(main())
