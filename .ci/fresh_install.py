#!/usr/bin/env python3
"""CI's fresh-install check (issue 9, item 1), run by .ci/run before the suite.

The suite runs in a virtualenv with the test extras, which hid that `make run` crashed on a module
only the extras installed. This makes a second, empty virtualenv, runs `pip install .` (no
extras, as the images do), imports every module of every deployable from it, then starts
`parley up` and `parley signaling` from it and has each serve a page and accept a WebSocket.

    python3 .ci/fresh_install.py            # exit 0 when all of it works
    <venv>/bin/python .ci/fresh_install.py --probe   # the part that runs inside the new venv

Only the standard library here; the probe uses httpx and websockets from the installed
runtime dependencies (uvicorn[standard] brings websockets), never the test extras.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOYABLES = ("parley", "parley.signaling", "parley.media", "parley.operator", "parley.recorder")
START_TIMEOUT_S = 60.0


def log(msg: str) -> None:
    print(f"fresh-install: {msg}", flush=True)


def source_copy(where: Path) -> Path:
    """The checkout's files as a fresh clone has them (tracked and new, not ignored): pip
    builds in the source folder, and a stale build/ there could put deleted modules in the
    wheel; and the checkout stays clean."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=ROOT, capture_output=True, check=True)
    for rel in filter(None, listed.stdout.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():  # listed but deleted in the working tree: not in a clone either
            dst = where / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    return where


def build_venv(python: str, where: Path, source: Path) -> Path:
    """A new virtualenv with `pip install .` only; returns its python."""
    subprocess.run([python, "-m", "venv", str(where)], check=True)
    vpy = where / "bin" / "python"
    subprocess.run([str(vpy), "-m", "pip", "install", "-q", str(source)], check=True)
    return vpy


# ---- inside the fresh virtualenv -------------------------------------------------------------

def source_modules(source: Path) -> set[str]:
    """Every module the source folders hold, by its installed name (package-dir of
    pyproject.toml): a sub-package missing from `packages` would be left out of the wheel."""
    cfg = tomllib.loads((source / "pyproject.toml").read_text())["tool"]["setuptools"]
    out: set[str] = set()
    for pkg, folder in cfg["package-dir"].items():
        for f in (source / folder).rglob("*.py"):
            rel = f.relative_to(source / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if all(p.isidentifier() for p in parts) and (f.parent / "__init__.py").exists():
                out.add(".".join([pkg, *parts]))
    return out


def import_everything(venv: Path, source: Path) -> int:
    """Import each module of each deployable; they must come from the venv, not the checkout,
    and every module of the source folders must be there."""
    import parley

    origin = Path(parley.__file__).resolve()
    if not origin.is_relative_to(venv):
        raise SystemExit(f"parley imported from {origin}, not from the fresh venv {venv}")
    failed: dict[str, str] = {}
    names: set[str] = set()
    for pkg in DEPLOYABLES:
        mod = importlib.import_module(pkg)
        names.add(pkg)
        for info in pkgutil.walk_packages(mod.__path__, pkg + ".",
                                          onerror=lambda n: failed.setdefault(n, "walk")):
            names.add(info.name)
    for name in sorted(source_modules(source) - names):
        failed[name] = "in the source folders but not installed (pyproject.toml packages)"
    for name in sorted(names):
        try:
            importlib.import_module(name)
        except BaseException as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"
    for name, why in sorted(failed.items()):
        log(f"cannot import {name}: {why}")
    if failed:
        raise SystemExit(1)
    return len(names)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_and_connect(argv: list[str], data: Path) -> None:
    """Start `parley <argv>`, wait for its "running at" line, GET /, open /ws, stop it."""
    import asyncio

    import httpx
    import websockets

    port = free_port()
    data.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PARLEY_DATA_DIR": str(data)}
    for k in [k for k in env if k.startswith("PARLEY_") and k != "PARLEY_DATA_DIR"]:
        del env[k]  # the embedded defaults, exactly as on a fresh machine
    cmd = [str(Path(sys.executable).parent / "parley"), *argv, "--host", "127.0.0.1",
           "--port", str(port)]
    out = data / "server.log"
    with out.open("wb") as sink:
        proc = subprocess.Popen(cmd, cwd=data, env=env, stdout=subprocess.PIPE, stderr=sink)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        seen = b""
        while b"running at" not in seen:  # printed once the socket is bound
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            chunk = os.read(proc.stdout.fileno(), 4096) if ready else b""
            seen += chunk
            if (ready and not chunk) or time.monotonic() > deadline:
                raise SystemExit(f"`parley {' '.join(argv)}` did not start (exit "
                                 f"{proc.poll()}):\n{out.read_text(errors='replace')[-3000:]}")
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as http:
            page = http.get("/")
            if page.status_code != 200 or "<html" not in page.text.lower():
                raise SystemExit(f"GET / -> {page.status_code}")
            res = http.post("/api/v1/guest-token", json={"room": "fresh-install"})
            if res.status_code != 200:
                raise SystemExit(f"POST /api/v1/guest-token -> {res.status_code} {res.text}")
            token = res.json()["token"]

        async def talk() -> dict:
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws",
                                          open_timeout=10) as ws:
                await ws.send(json.dumps({"type": "auth", "token": token}))
                welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
                await ws.send(json.dumps({"type": "ping", "id": 1}))
                pong = json.loads(await asyncio.wait_for(ws.recv(), 10))
                return {"welcome": welcome, "pong": pong}

        got = asyncio.run(talk())
        if got["welcome"].get("type") != "welcome" or got["pong"].get("type") != "pong":
            raise SystemExit(f"WebSocket on `parley {argv[0]}`: {got}")
        log(f"`parley {argv[0]}`: GET / 200, WebSocket welcome and pong")
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def probe(venv: Path, scratch: Path) -> None:
    n = import_everything(venv, scratch / "src")
    log(f"imported {n} modules of {', '.join(DEPLOYABLES)} and the rest of `parley`: "
        f"every module of the source folders")
    serve_and_connect(["up"], scratch / "up")
    serve_and_connect(["signaling"], scratch / "signaling")


# ---- driver ----------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probe", action="store_true", help="(internal) run inside the new venv")
    ap.add_argument("--venv", type=Path, help="(internal) the venv under test")
    ap.add_argument("--scratch", type=Path, help="(internal) a folder outside the checkout")
    ap.add_argument("--keep", action="store_true", help="keep the temporary venv")
    args = ap.parse_args()
    if args.probe:
        probe(args.venv.resolve(), args.scratch)
        return 0
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="parley-fresh-"))
    try:
        vpy = build_venv(sys.executable, tmp / "venv", source_copy(tmp / "src"))
        log(f"`pip install .` into an empty venv: {time.monotonic() - t0:.0f} s")
        # cwd outside the checkout, so nothing is imported from the source folders.
        subprocess.run([str(vpy), str(Path(__file__).resolve()), "--probe",
                        "--venv", str(tmp / "venv"), "--scratch", str(tmp)],
                       cwd=tmp, check=True)
    except subprocess.CalledProcessError as exc:
        log(f"FAILED: {exc}")
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"passed in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
