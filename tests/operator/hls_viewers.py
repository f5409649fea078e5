"""Simulated LL-HLS viewers: N plain httpx clients, each on its own connection, fetching a
rendition's playlist and then its newest part about once per ``period``; a process of its own so
that its event loop competes with nothing in the test (the aiortc publisher and viewers).

    python -m tests.operator.hls_viewers BASE PATH RENDITION N PERIOD

Runs until stdin closes (or 120 s at most), then prints one JSON line: parts fetched per viewer
and the p50/p95 time of playlist + part (after each viewer's first). Even viewers send
``X-Playback-Session-Id`` (as AVPlayer does), odd ones are told apart only by their User-Agent
(as hls.js in a browser is).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import threading
import time

import httpx

LIMIT_S = 120.0


def newest_part(playlist: str) -> str | None:
    parts = [line.split('URI="', 1)[1].split('"', 1)[0]
             for line in playlist.splitlines() if line.startswith("#EXT-X-PART:")]
    return parts[-1] if parts else None


async def viewer(i: int, base: str, path: str, rendition: str, period: float,
                 stop: asyncio.Event, fetched: list[int], waits: list[float]) -> None:
    headers = ({"X-Playback-Session-Id": f"session-{i}"} if i % 2 == 0
               else {"User-Agent": f"viewer/{i}"})
    # verify=False: plain http on loopback; it spares loading the CA bundle 200 times
    async with httpx.AsyncClient(base_url=base, timeout=10, headers=headers,
                                 verify=False) as http:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), random.uniform(0, period))
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                t = time.monotonic()
                r = await http.get(f"{path}/{rendition}.m3u8")
                part = newest_part(r.text) if r.status_code == 200 else None
                if part is not None and (await http.get(f"{path}/{part}")).status_code == 200:
                    fetched[i] += 1
                    if fetched[i] > 1:  # the first one includes connecting
                        waits.append(time.monotonic() - t)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period * random.uniform(0.8, 1.2))


async def main(base: str, path: str, rendition: str, n: int, period: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def until_stdin_closes() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    loop.call_later(LIMIT_S, stop.set)
    fetched, waits = [0] * n, []
    await asyncio.gather(*(viewer(i, base, path, rendition, period, stop, fetched, waits)
                           for i in range(n)))
    waits.sort()
    print(json.dumps({"fetched": fetched, "requests": 2 * len(waits),
                      "p50": waits[len(waits) // 2] if waits else None,
                      "p95": waits[len(waits) * 95 // 100] if waits else None}), flush=True)


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], a[2], int(a[3]), float(a[4])))
