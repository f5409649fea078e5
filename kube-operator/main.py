"""`parley operator`: leader election, metrics endpoint, then the kopf event loop (and, with a
recording store, the file-creator Job loop beside it)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading

import kopf

from parley.operator import metrics
from parley.operator.config import OperatorConfig
from parley.operator.leader import LeaderElector


def run(args: argparse.Namespace) -> int:
    namespaces = list(getattr(args, "namespace", None) or [])
    config = OperatorConfig.from_env(
        namespaces, pool_namespace=getattr(args, "pool_namespace", None),
        metrics_port=getattr(args, "metrics_port", None))
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kubernetes").setLevel(logging.WARNING)

    from parley.operator import handlers
    from parley.operator.broadcasts import BroadcastController
    from parley.operator.meetings import MeetingController

    handlers.meetings = MeetingController(config)
    handlers.broadcasts = BroadcastController(config)
    metrics.serve(config.metrics_port)

    stop = threading.Event()
    elector = LeaderElector(config.lease_namespace, config.identity)
    try:
        if not elector.acquire(stop):
            return 1
    except KeyboardInterrupt:
        return 130
    lost = threading.Event()

    def on_lost() -> None:
        lost.set()
        stop.set()

    keeper = threading.Thread(target=elector.keep, args=(stop, on_lost), daemon=True)
    keeper.start()
    if config.recording_store:  # leader only, like the reconcilers: started after acquire
        from parley.operator.recordings import FileCreatorJobs

        threading.Thread(target=FileCreatorJobs(config).run, args=(stop,),
                         name="file-creator", daemon=True).start()
    watched = config.watched()
    try:
        asyncio.run(kopf.operator(clusterwide=not watched, namespaces=watched,
                                  standalone=True, stop_flag=stop))
    finally:
        if not lost.is_set():
            stop.set()
            elector.release()
    return 1 if lost.is_set() else 0
