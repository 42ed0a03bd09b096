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
    ap.add_argument("--instance", "-i", metavar="NAME",
                    help="run only this [instances.NAME] of the config (default: all of them, "
                    "one proxy process tree each; see docs/instances.md)")
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
    die_with_parent()
    from .dccode import use

    use()  # the dataclasses' methods compiled at image build (issue 13)
    from .app import load_config_or_exit, run

    mark("proxy-imported")
    config = load_config_or_exit(args.config)
    if args.instance is not None:
        if args.instance not in config.instances:
            print(f"{config.source}: no instance {args.instance!r} (instances: "  # noqa: T201
                  f"{', '.join(config.instances)})", file=sys.stderr)
            sys.exit(1)
        config = config.instances[args.instance]
    elif len(config.instances) > 1:
        from .app import setup_logging
        from .launcher import run_instances

        setup_logging("info")
        sys.exit(run_instances(args.config, list(config.instances)))
    else:
        config = next(iter(config.instances.values()))
    sys.exit(run(config))


def die_with_parent() -> None:
    """Started by run-supervisor for the supervisor it then execs (SIPEDGE_PARENT_PID, the
    pid of both): SIGTERM when that process dies, as a proxy the supervisor forks itself gets
    (appliance/process.py); if it is gone already, exit."""
    import os

    parent = os.environ.pop("SIPEDGE_PARENT_PID", "")
    if not parent.isdigit():
        return
    from .pdeathsig import term_with_parent

    term_with_parent()
    if os.getppid() != int(parent):
        print("sipedge: the supervisor that started it is gone", file=sys.stderr)  # noqa: T201
        sys.exit(0)


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


def _instance_socket(path: str | None, name: str | None) -> str:
    """The control socket of instance `name` (None: the only one), from the config file when
    one is given, else by the naming rule of config/instances.py."""
    from .config.instances import ctl_socket_for

    if path is None:
        if name is not None:
            return ctl_socket_for(name)
        import glob
        import os

        single = ctl_socket_for("default")
        found = sorted(glob.glob(ctl_socket_for("*")))
        if os.path.exists(single) or not found:
            return single
        if len(found) > 1:
            names = ", ".join(os.path.basename(os.path.dirname(f)) for f in found)
            sys.exit(f"several instances run ({names}): choose one with -i NAME")
        return found[0]
    from .config import ConfigError, load_file

    try:
        config = load_file(path)
    except ConfigError as exc:
        sys.exit("\n".join(str(e) for e in exc.errors))
    if name is None:
        if len(config.instances) > 1:
            sys.exit(f"{path} has several instances ({', '.join(config.instances)}): "
                     "choose one with -i NAME")
        name = next(iter(config.instances))
    if name not in config.instances:
        sys.exit(f"{path}: no instance {name!r} (instances: {', '.join(config.instances)})")
    return str(config.instances[name].core.ctl_socket)


def ctl_main(argv: list[str] | None = None) -> None:
    from .io.rpc import RpcError, rpc_call

    ap = argparse.ArgumentParser(
        prog="sipedgectl", description="sipedge management client (JSON-RPC over a UNIX socket)",
        epilog="examples: sipedgectl stats | sipedgectl route.reload | "
               "sipedgectl config.check file=/boot/sipedge.toml | sipedgectl core.methods")
    ap.add_argument("-s", "--socket", help="control socket (default: /run/sipedge/ctl.sock, "
                    f"or {SUPERVISOR_SOCKET} for supervisor methods)")
    ap.add_argument("-i", "--instance", metavar="NAME",
                    help="the proxy instance to talk to (docs/instances.md); its socket is "
                    "/run/sipedge/NAME/ctl.sock, or what --config names for it")
    ap.add_argument("-c", "--config", metavar="FILE",
                    help="take the control socket from this config file")
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
    if sock is None and args.method.startswith(SUPERVISOR_METHODS):
        sock = SUPERVISOR_SOCKET
    if sock is None:
        sock = _instance_socket(args.config, args.instance)
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
