"""`parley operator`: leader election, metrics endpoint, then the kopf event loop (and, with a
recording store, the file-creator Job loop beside it)."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import signal
import threading

import kopf

from parley.operator import metrics
from parley.operator.config import OperatorConfig
from parley.operator.leader import LeaderElector

RELEASE_WAIT_S = 2.0  # at most this for a lease renewal in flight before releasing
KOPF_GRACE_S = 2.5  # after SIGTERM, kopf's own shutdown gets this much, then it is cancelled

log = logging.getLogger("parley.operator.main")


def run(args: argparse.Namespace) -> int:
    namespaces = list(getattr(args, "namespace", None) or [])
    config = OperatorConfig.from_env(
        namespaces, pool_namespace=getattr(args, "pool_namespace", None),
        metrics_port=getattr(args, "metrics_port", None))
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1`: every stack

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
    loop_stop: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def on_lost() -> None:
        lost.set()
        for loop, flag in loop_stop:
            loop.call_soon_threadsafe(flag.set)

    keeper = threading.Thread(target=elector.keep, args=(stop, on_lost), name="lease",
                              daemon=True)
    keeper.start()
    if config.recording_store:  # leader only, like the reconcilers: started after acquire
        from parley.operator.recordings import FileCreatorJobs

        threading.Thread(target=FileCreatorJobs(config).run, args=(stop,),
                         name="file-creator", daemon=True).start()
    watched = config.watched()

    async def operate() -> None:
        # kopf's stop flag is an asyncio.Event: given a threading.Event, kopf waits for it in
        # the default executor, and asyncio.run's executor shutdown then waits forever for that
        # worker after SIGTERM (the hang of issue 9). Losing the lease sets it from its thread.
        loop = asyncio.get_running_loop()
        flag, ready = asyncio.Event(), asyncio.Event()
        loop_stop.append((loop, flag))
        if lost.is_set():
            flag.set()
        kopf_task = asyncio.create_task(kopf.operator(
            clusterwide=not watched, namespaces=watched, standalone=True, stop_flag=flag,
            ready_flag=ready))
        cut: list[asyncio.TimerHandle] = []

        def on_signal(sig: signal.Signals) -> None:
            """kopf's own handler waits up to 5 s more for idle per-object workers; the pod's
            grace period and a standby are better served by a bounded stop."""
            if not cut:
                log.info("%s: stopping, at most %.1f s for kopf", sig.name, KOPF_GRACE_S)
                flag.set()
                cut.append(loop.call_later(KOPF_GRACE_S, kopf_task.cancel))

        ready_wait = asyncio.create_task(ready.wait())
        await asyncio.wait({kopf_task, ready_wait}, return_when=asyncio.FIRST_COMPLETED)
        ready_wait.cancel()
        if not kopf_task.done():  # kopf installed its handlers while starting: replace them
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, on_signal, sig)
        try:
            await kopf_task
        except asyncio.CancelledError:
            if not cut or asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise
            log.info("kopf cut off after %.1f s", KOPF_GRACE_S)
        finally:
            for handle in cut:
                handle.cancel()

    try:
        asyncio.run(operate())
    finally:
        stop.set()
        # The renewer must be done before the release, or a renewal in flight re-takes the
        # lease after it and a standby waits the full lease duration.
        keeper.join(RELEASE_WAIT_S)
        if not lost.is_set():
            elector.release()
    return 1 if lost.is_set() else 0
