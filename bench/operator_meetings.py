"""Benchmark (not a test): apply N Meetings, time until all are Ready; operator CPU and peak RSS.

    .venv/bin/python -m bench.operator_meetings [N]   # writes bench/results/operator.json

Needs the running test bed. The operator runs as a real subprocess scoped to a fresh namespace,
with the test bed's Redis as its directory (so placements and policies are written, as in a
deployment).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import ROOT, Kube, provision
from tests.operator.conftest import Operator, make_pool


def _proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS bytes) of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / tick
    hwm = next(int(line.split()[1]) * 1024 for line in
               Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmHWM:"))
    return cpu, hwm


RESULT = ROOT / "bench" / "results" / "operator.json"


def main(n: int) -> dict:
    env = provision.up()
    kube = Kube(env)
    os.environ["KUBECONFIG"] = kube.kubeconfig
    kube.kubectl("apply", "-f", str(ROOT / "crds"))
    ns = kube.namespace("bench")
    try:
        # 500 meetings of 20 in pods of 500: 20 pods plus headroom.
        make_pool(kube, ns, per_pod=500, headroom=1, max_replicas=100)
        docs = [json.dumps({"apiVersion": "parley.dev/v1alpha1", "kind": "Meeting",
                            "metadata": {"name": f"m{i}"},
                            "spec": {"region": "eu", "maxParticipants": 20}})
                for i in range(n)]
        op = Operator(kube, ns, Path(tempfile.mkdtemp()), identity="bench",
                      env={"PARLEY_RESYNC_SECONDS": "2",
                           "PARLEY_REDIS_URL": env["REDIS_URL"].rsplit("/", 1)[0] + "/13"}
                      ).start()
        time.sleep(3)
        assert op.proc is not None
        cpu0, _ = _proc_stats(op.proc.pid)
        start = time.monotonic()
        kube.kubectl("apply", "-n", ns, "-f", "-", input="\n---\n".join(docs), timeout=300)
        applied = time.monotonic() - start
        ready = 0
        last = -1
        while time.monotonic() - start < 600:
            out = kube.kubectl("get", "meetings", "-n", ns, "-o",
                               "jsonpath={.items[*].status.phase}").stdout.split()
            ready = sum(1 for p in out if p in ("Ready", "Live"))
            if ready != last:
                print(f"{ready}/{n} Ready after {time.monotonic() - start:.1f} s",
                      file=sys.stderr, flush=True)
                last = ready
            if ready == n:
                break
            time.sleep(1)
        elapsed = time.monotonic() - start
        cpu1, peak = _proc_stats(op.proc.pid)
        op.stop()
        pool = kube.json("get", "deployment", "call-server-eu", "-n", ns)["spec"]["replicas"]
        return {"benchmark": "operator_meetings_ready", "meetings": n, "ready": ready,
                "apply_seconds": round(applied, 1), "all_ready_seconds": round(elapsed, 1),
                "operator_cpu_seconds": round(cpu1 - cpu0, 1),
                "operator_peak_rss_mb": round(peak / 2**20, 1), "pool_replicas": pool,
                "targets": {"all_ready_seconds": 60, "operator_peak_rss_mb": 200},
                "bench_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                                      1)}
    finally:
        subprocess.run([kube.kubectl_bin, "delete", "namespace", ns, "--wait=false"],
                       env=kube.env, capture_output=True, check=False)


if __name__ == "__main__":
    result = main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
    result["date"] = time.strftime("%Y-%m-%d")
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
