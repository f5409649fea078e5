"""The ``parley`` command: one subcommand per deployable component."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

NOT_YET = 3  # exit code of a component whose issue has not landed yet


def _not_landed(component: str, issue: int) -> Callable[[argparse.Namespace], int]:
    def run(_: argparse.Namespace) -> int:
        print(f"parley {component}: not implemented yet (tracked in issue #{issue})",
              file=sys.stderr)
        return NOT_YET

    return run


def _lazy(module: str, func: str = "run") -> Callable[[argparse.Namespace], int]:
    """Import a component only when its subcommand runs, so `parley --help` stays fast."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        return int(getattr(importlib.import_module(module), func)(args) or 0)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run everything on one machine with embedded defaults")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8080)
    up.add_argument("--data-dir", default=None, help="where local state goes (default ./var)")
    up.set_defaults(func=_lazy("parley.embedded"))

    sig = sub.add_parser("signaling", help="run the signaling service")
    sig.add_argument("--host", default="0.0.0.0")
    sig.add_argument("--port", type=int, default=8080)
    sig.set_defaults(func=_lazy("parley.embedded", "run_signaling"))

    media = sub.add_parser("media-node", help="run a media node")
    media.add_argument("--role", choices=["call-server", "ingest", "transcoder", "edge-relay",
                                          "recorder"], required=True)
    env = os.environ.get  # the chart configures media nodes by environment
    media.add_argument("--host", default="0.0.0.0")
    media.add_argument("--port", type=int, default=8080, help="control API (HTTP) port")
    media.add_argument("--node-id", default=env("POD_NAME"),
                       help="default: $POD_NAME, else a random cs-xxxxxxxx")
    media.add_argument("--region", default=env("PARLEY_REGION", "local"))
    media.add_argument("--url", default=None, help="control API URL signaling should use "
                       "(default: http://$POD_IP:<port> in a pod, else http://<host>:<port>)")
    media.add_argument("--advertise", default=env(
                       "HOST_IP" if env("PARLEY_UDP_MODE") == "hostPort" else "POD_IP", ""),
                       help="media address clients reach (host candidates)")
    media.add_argument("--udp-port", type=int,
                       default=int(env("PARLEY_MEDIA_PORT")) if env("PARLEY_MEDIA_PORT") else None,
                       help="one UDP port for every participant ($PARLEY_MEDIA_PORT; "
                       "default: an ephemeral port per participant)")
    media.add_argument("--capacity", type=int, default=400, help="subscriptions budget")
    media.add_argument("--capacity-participants", type=int,
                       default=int(env("PARLEY_CAPACITY", "0") or 0),
                       help="participants budget ($PARLEY_CAPACITY; 0 = no limit)")
    media.add_argument("--redis-url", default=None, help="register here (or PARLEY_REDIS_URL)")
    media.add_argument("--drain-deadline", type=float,
                       default=float(env("PARLEY_DRAIN_DEADLINE_S", "60") or 60),
                       help="on SIGTERM: seconds the current meetings keep this node before "
                       "their participants are moved ($PARLEY_DRAIN_DEADLINE_S, default 60)")
    media.set_defaults(func=_lazy("parley.media.server"))

    op = sub.add_parser("operator", help="run the Kubernetes operator")
    op.add_argument("--namespace", action="append", default=None,
                    help="watch only these namespaces (default: all)")
    op.add_argument("--pool-namespace", default=None,
                    help="where shared call-server pools live (default: $PARLEY_POOL_NAMESPACE)")
    op.add_argument("--metrics-port", type=int, default=None,
                    help="Prometheus metrics port (default: $PARLEY_METRICS_PORT or 9090)")
    op.set_defaults(func=_lazy("parley.operator.main"))

    tok = sub.add_parser("token", help="mint an access token and print it")
    where = tok.add_mutually_exclusive_group(required=True)
    where.add_argument("--room")
    where.add_argument("--broadcast", help="a broadcast's token (a stream key with --source "
                       "NAME --grant publish); docs/broadcast.md")
    tok.add_argument("--identity", default=None)
    tok.add_argument("--source", default=None, help="with --broadcast: the source's name")
    tok.add_argument("--name", default=None, help="display name (default: the identity)")
    tok.add_argument("--grant", action="append", default=None,
                     choices=["publish", "subscribe", "record", "admin"],
                     help="repeat for several (default: publish and subscribe)")
    tok.add_argument("--ttl", type=int, default=3600,
                     help="lifetime in seconds, 1..86400 (at most 24 h; default 3600)")
    tok.set_defaults(func=_lazy("parley.tokens", "cli"))

    from parley.analytics.cli import add_parser as analytics  # issue 13

    analytics(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
