"""Console scripts: `sipedge` (the daemon) and `sipedgectl` (the management client)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import __version__

SUPERVISOR_SOCKET = "/run/sipedge/supervisor.sock"
SUPERVISOR_METHODS = ("supervisor.", "config.errors", "config.apply", "watchdog.", "update.")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="sipedge", description="SIP edge proxy")
    ap.add_argument("--config", "-c", metavar="FILE",
                    help="TOML config file (default: the embedded default config)")
    ap.add_argument("--check-config", metavar="FILE",
                    help="validate FILE (and its routing script), print errors, exit 0/1")
    ap.add_argument("--print-default-config", action="store_true",
                    help="print the embedded default config and exit")
    ap.add_argument("--version", action="version", version=f"sipedge {__version__}")
    args = ap.parse_args(argv)

    if args.print_default_config:
        from .config import DEFAULT_TOML

        sys.stdout.write(DEFAULT_TOML)
        return
    if args.check_config:
        from .app import config_check

        result = config_check(args.check_config)
        for e in result["errors"]:
            print(e)  # noqa: T201 - CLI output
        for w in result.get("warnings", ()):
            print(f"warning: {w}")  # noqa: T201
        if result["valid"]:
            print(f"{args.check_config}: OK")  # noqa: T201
        sys.exit(0 if result["valid"] else 1)

    from .bootmark import mark

    mark("proxy-start")
    from .app import load_config_or_exit, run

    mark("proxy-imported")
    sys.exit(run(load_config_or_exit(args.config)))


def _parse_param(text: str) -> tuple[str | None, Any]:
    key, eq, value = text.partition("=")
    if eq and key.isidentifier():
        try:
            return key, json.loads(value)
        except ValueError:
            return key, value
    return None, text


def _render(value: Any, indent: int = 0) -> list[str]:
    pad = "  " * indent
    if isinstance(value, dict):
        lines = []
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{k}:")
                lines.extend(_render(v, indent + 1))
            else:
                lines.append(f"{pad}{k}: {_scalar(v)}")
        return lines
    if isinstance(value, list):
        lines = []
        for v in value:
            if isinstance(v, (dict, list)):
                sub = _render(v, indent + 1)
                lines.append(f"{pad}- {sub[0].strip()}" if sub else f"{pad}-")
                lines.extend(sub[1:])
            else:
                lines.append(f"{pad}- {_scalar(v)}")
        return lines
    return [f"{pad}{_scalar(value)}"]


def _scalar(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (dict, list)):
        return "(none)"
    return str(v)


def ctl_main(argv: list[str] | None = None) -> None:
    from .io.rpc import RpcError, rpc_call

    ap = argparse.ArgumentParser(
        prog="sipedgectl", description="sipedge management client (JSON-RPC over a UNIX socket)",
        epilog="examples: sipedgectl stats | sipedgectl route.reload | "
               "sipedgectl config.check file=/boot/sipedge.toml | sipedgectl core.methods")
    ap.add_argument("-s", "--socket", help="control socket (default: /run/sipedge/ctl.sock, "
                    f"or {SUPERVISOR_SOCKET} for supervisor methods)")
    ap.add_argument("--json", action="store_true", help="print the raw JSON result")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("method")
    ap.add_argument("params", nargs="*", help="key=value (value as JSON if it parses) or words")
    args = ap.parse_args(argv)

    named: dict[str, Any] = {}
    positional: list[Any] = []
    for p in args.params:
        k, v = _parse_param(p)
        if k is None:
            positional.append(v)
        else:
            named[k] = v
    params: dict | list | None = None
    if named and positional:
        named["args"] = positional
        params = named
    elif named:
        params = named
    elif positional:
        params = positional
    sock = args.socket
    if sock is None:
        sock = SUPERVISOR_SOCKET if args.method.startswith(SUPERVISOR_METHODS) \
            else "/run/sipedge/ctl.sock"
    try:
        result = rpc_call(sock, args.method, params, timeout=args.timeout)
    except RpcError as exc:
        print(f"error: {exc.message}", file=sys.stderr)  # noqa: T201 - CLI output
        if exc.data:
            print(json.dumps(exc.data, indent=2), file=sys.stderr)  # noqa: T201
        sys.exit(1)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))  # noqa: T201
    else:
        print("\n".join(_render(result)))  # noqa: T201
