"""`sipedge-supervisor`: the appliance's process supervisor (started by init at boot).

    sipedge-supervisor [--boot-config /boot/sipedge.toml] [--data-dir /data] [--simulate]
                       [--early-proxy PID:FD] [--run-state FILE]

Selects the configuration (boot file, else last-known-good, else the embedded default), runs
`sipedge --config FILE`, restarts it with backoff, pets the hardware watchdog while the proxy is
healthy, drives the panel and serves `supervisor.*` and `config.errors` on its RPC socket.
SIGTERM/SIGINT stop cleanly (the watchdog is disarmed), SIGHUP reloads the configuration.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..bootmark import mark
from .ringlog import RingLogHandler

if TYPE_CHECKING:
    import asyncio

    from .process import ProxyProcess
    from .sdconfig import BootConfigManager, ConfigChoice

# The boot path is: run-supervisor starts the proxy and execs this program (--early-proxy),
# which takes it over, chooses the config, then imports and builds everything else (asyncio,
# the supervisor loop, panel, console, RPC, hotplug). Started otherwise, it launches the proxy
# itself first. Module-level imports stay this light: every import before the launch delays
# the first SIP answer (issue 13).

RING = RingLogHandler(500)  # the RAM log the console's `logs` shows

log = logging.getLogger("sipedge.appliance.supervisor")

# S00mount creates this while it loads the drivers of the devices present (modalias pass in
# the background); the hardware (watchdog, LEDs, LCD) is opened once it is gone.
COLDPLUG_PENDING = Path("/run/sipedge/coldplug.pending")
# S20network's, until its DHCP clients (started in the background) have written their pid
# files: with [network] manage = true they are stopped, so they must all have started.
DHCP_PENDING = Path("/run/sipedge/dhcp.pending")
BOOT_WAIT_S = 30.0
# run-supervisor counts a supervisor that ends within this many seconds of its start, other
# than by a clean stop, as a fast failure (three: it runs the proxy alone); see --run-state.
FAST_FAILURE_S = 30.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sipedge-supervisor", description=__doc__.split("\n")[0])
    p.add_argument("--boot-config", default="/boot/sipedge.toml", type=Path,
                   help="config file on the SD card's boot partition")
    p.add_argument("--data-dir", default="/data", type=Path,
                   help="writable data partition (last-known-good copy)")
    p.add_argument("--sysfs", default="/sys", type=Path, help="sysfs root (tests)")
    p.add_argument("--board-data", default="/usr/share/sipedge/board", type=Path,
                   help="the board's facts (LED names); installed from board/<board>/meta")
    p.add_argument("--dev", default="/dev", type=Path, help="/dev root (tests)")
    p.add_argument("--simulate", action="store_true",
                   help="use recording fakes instead of the watchdog, LEDs and LCD")
    p.add_argument("--no-watchdog", action="store_true", help="never open the watchdog")
    p.add_argument("--rpc-socket", help="override [supervisor] rpc_socket")
    p.add_argument("--show-choice", action="store_true",
                   help="print which config would run (JSON) and exit")
    p.add_argument("--hash-password", action="store_true",
                   help="read a password and print the [management] password_hash value")
    p.add_argument("--reboot-cmd", nargs="+", default=["reboot"],
                   help="command the console's `reboot` runs")
    p.add_argument("--log-level", default="info",
                   choices=("debug", "info", "warning", "error"))
    p.add_argument("--early-proxy", metavar="PID:FD",
                   help="adopt the proxy run-supervisor started before it exec'd this program: "
                   "`sipedge --config BOOT_CONFIG`, process PID, its output on the fifo open "
                   "on FD (it is stopped if the config choice runs anything else)")
    p.add_argument("--run-state", type=Path, metavar="FILE",
                   help=f"write `ok` to FILE after {FAST_FAILURE_S:.0f} s of running and on a "
                   "clean stop (run-supervisor writes `pending` before it starts this program "
                   "and counts a `pending` left behind as a fast failure)")
    return p.parse_args(argv)


def build_hardware(args: argparse.Namespace, choice: Any) -> dict[str, Any]:
    """Real adapters (or fakes with --simulate); a missing device is logged, never fatal."""
    import importlib.util
    import shutil

    from . import fakes
    from .leds import SysfsLeds, led_names, read_board_data
    from .ota import SYSTEM_CONF, OtaManager
    from .update import RaucCli
    from .watchdog import HardwareWatchdog

    cfg = choice.config
    hw: dict[str, Any] = {"watchdog": None, "leds": None, "display": None, "update_agent": None,
                          "network": None, "hotplug": None}
    if args.simulate:
        hw.update(watchdog=fakes.FakeWatchdog(), leds=fakes.FakeLeds(),
                  display=fakes.FakeDisplay(cfg.panel.lcd_cols, cfg.panel.lcd_rows),
                  update_agent=fakes.FakeUpdateAgent())
        return hw
    if cfg.watchdog.enabled and not args.no_watchdog:
        # Opened (armed) by Supervisor.run(), right before its loop starts petting.
        hw["watchdog"] = HardwareWatchdog(_under(args.dev, cfg.watchdog.device),
                                          cfg.watchdog.timeout_s)
    names = led_names(cfg.panel.status_led, cfg.panel.error_led,
                      read_board_data(args.board_data))
    if any(names.values()):
        hw["leds"] = SysfsLeds(names, args.sysfs)
    hw["display"] = build_display(args, choice)
    if shutil.which("rauc"):
        hw["update_agent"] = RaucCli()
        if SYSTEM_CONF.exists():  # an A/B image: the full update agent (issue 12)
            hw["update_agent"] = OtaManager(cfg.update, data_dir=args.data_dir)
    try:
        # only look for pyroute2 here: importing it costs seconds on a slow board, and the
        # network code imports it when it first needs it
        if importlib.util.find_spec("pyroute2") is None:
            raise ImportError("pyroute2")
        from .network import NetworkManager
        hw["network"] = NetworkManager()
    except ImportError:
        if cfg.network.manage:
            log.error("[network] manage = true but pyroute2 is not installed")
    try:
        from .hotplug import UdevMonitor

        hw["hotplug"] = UdevMonitor()
    except (ImportError, OSError) as exc:
        log.warning("hotplug unavailable: %s", exc)
    return hw


def build_display(args: argparse.Namespace, choice: Any) -> Any:
    """The LCD of `[panel]` (None: none configured, or it cannot be opened: logged)."""
    from .lcd import I2cLcd, open_bus
    from .watchdog import HardwareError

    panel = choice.config.panel
    if args.simulate or panel.lcd_bus < 0:
        return None
    try:
        bus = open_bus(panel.lcd_bus, args.dev)
        return I2cLcd(bus, panel.lcd_address, panel.lcd_cols, panel.lcd_rows)
    except HardwareError as exc:
        log.error("LCD unavailable: %s", exc)
        return None


def booted_slot(cmdline: str) -> str | None:
    """The slot the boot loader started, from the kernel command line (`rauc.slot=A`)."""
    for word in cmdline.split():
        if word.startswith("rauc.slot="):
            return word.split("=", 1)[1] or None
    return None


def _under(dev_root: Path, device: str) -> Path:
    """Map an absolute /dev path from the config into the --dev root."""
    p = Path(device)
    if dev_root != Path("/dev") and p.is_absolute() and p.parts[1:2] == ("dev",):
        return dev_root.joinpath(*p.parts[2:])
    return p


async def serve(args: argparse.Namespace, source: BootConfigManager | None = None,
                choice: ConfigChoice | None = None, early: ProxyProcess | None = None) -> int:
    import asyncio
    import signal

    from .supervisor import Supervisor

    if source is None or choice is None:
        source, choice = choose_config(args)
    if choice.source != "boot" and not args.simulate:
        _kernel_console(f"sipedge: running the {choice.source} config "
                        f"{choice.path or '(embedded)'}: {args.boot_config} "
                        + (f"has errors ({choice.errors[0]}; `show errors` on the "
                           "management console)" if choice.issues else "is missing"))
    if not args.simulate:
        jobs = (COLDPLUG_PENDING,) + ((DHCP_PENDING,) if choice.config.network.manage else ())
        await asyncio.to_thread(wait_boot_jobs, jobs)
    hw = build_hardware(args, choice)
    from .hotplug import MediaConfigOffer, boot_disk

    own_disk = boot_disk(sysfs=args.sysfs)
    media = MediaConfigOffer(source.check_text, ignore_disk=own_disk)
    if hasattr(hw["update_agent"], "ignore_disk"):  # ota.OtaManager: no bundles from it either
        hw["update_agent"].ignore_disk = own_disk
    sup = Supervisor(source, media=media, choice=choice, proxy_cwd=proxy_cwd(args), **hw)
    sup.early_proc = early
    if not args.simulate:
        sup.kernel_console = "/dev/console"
        sup.display_factory = lambda ch: build_display(args, ch)
    try:
        sup.info["slot"] = booted_slot(Path("/proc/cmdline").read_text(encoding="utf-8"))
    except OSError:
        pass
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, sup.request, "stop")
    loop.add_signal_handler(signal.SIGINT, sup.request, "stop")
    loop.add_signal_handler(signal.SIGHUP, sup.request, "reload")
    if args.run_state is not None:
        loop.call_later(FAST_FAILURE_S, note_run_ok, args.run_state)
    rpc_path = args.rpc_socket or choice.config.supervisor.rpc_socket
    server = await _start_rpc(rpc_path, sup.rpc_methods())
    console = _start_console(args, sup, source, loop)
    if early is not None or args.early_proxy:  # run-supervisor started it at nice 10
        _yield_cpu(False)
    try:
        return await sup.run()
    finally:
        if console is not None:
            console.stop()
        if server is not None:
            await server.close()


def _start_console(args: argparse.Namespace, sup: Any, source: BootConfigManager,
                   loop: asyncio.AbstractEventLoop) -> Any:
    from .auth import LoginGuard
    from .console import ConsoleSession, SerialConsole
    from .console_backend import SupervisorBackend

    from .leds import read_board_data

    mgmt = sup.choice.config.management
    device = mgmt.console_device
    if device == "auto":
        tty_name = read_board_data(args.board_data).get("MGMT_TTY", "")
        device = f"/dev/{tty_name}" if tty_name else ""
        if not device:
            log.warning("console_device = auto but the board data names no MGMT_TTY")
    if not device:
        return None
    store = ConsolePasswordStore(args.data_dir)
    backend = SupervisorBackend(sup, loop, source, RING, args.reboot_cmd)
    session = ConsoleSession(
        backend, lambda: sup.choice.config.management.password_hash or store.get(),
        LoginGuard(mgmt.max_failures, mgmt.lockout_s), mgmt.idle_logout_s,
        set_password=store.set)
    console = SerialConsole(device, session, mgmt.baud)
    try:
        console.start()
    except OSError as exc:
        log.error("console unavailable device=%s error=%s", device, exc)
        return None
    return console


class ConsolePasswordStore:
    """The console password chosen on first login: its hash in <data>/config/console-password
    (mode 0600). `[management] password_hash` in the config overrides it."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "config" / "console-password"

    def get(self) -> str:
        from .auth import is_valid_hash

        try:
            stored = self.path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return ""
        return stored if is_valid_hash(stored) else ""

    def set(self, password_hash: str) -> None:
        import os

        from .sdconfig import atomic_write

        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, (password_hash + "\n").encode("ascii"))
        os.chmod(self.path, 0o600)


def _kernel_console(text: str) -> None:
    """A line on the kernel console (/dev/console) for whoever stands at the box."""
    log.warning("%s", text)
    try:
        with open("/dev/console", "w", encoding="utf-8") as f:
            f.write(text + "\n")
    except OSError:
        pass  # not on the box


async def _start_rpc(path: str, methods: dict[str, Any]) -> Any:
    try:
        from ..io.rpc import RpcServer
    except ImportError:
        log.warning("RPC server unavailable (sipedge.io.rpc missing); no %s", path)
        return None
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        server = RpcServer(path, methods)
        await server.start()
    except OSError as exc:
        log.error("cannot serve RPC socket=%s error=%s", path, exc)
        return None
    log.info("supervisor RPC socket=%s", path)
    return server


def proxy_cwd(args: argparse.Namespace) -> str | None:
    """The proxy's working directory: the data partition (the rootfs is read-only)."""
    return str(args.data_dir) if args.data_dir.is_dir() else None


def choose_config(args: argparse.Namespace) -> tuple[BootConfigManager, ConfigChoice]:
    from ..config import FACTORY_PATH
    from .sdconfig import BootConfigManager

    source = BootConfigManager(args.boot_config, args.data_dir, factory_path=FACTORY_PATH)
    return source, source.select()


def plain_boot_argv(args: argparse.Namespace) -> list[str] | None:
    """The first proxy's command line when the boot file is the plain case, read before the
    config is validated (the proxy validates it itself): a boot file present and not rolled
    back, no [instances], [network] not managed (then the addresses are set up before the
    proxy starts). None otherwise: then the proxy waits for the loop's own spawn."""
    import tomllib

    from .rejected import read_record, rejected_path, rejects

    try:
        text = args.boot_config.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    network, sup = raw.get("network", {}), raw.get("supervisor", {})
    if "instances" in raw or not isinstance(network, dict) or not isinstance(sup, dict) \
            or network.get("manage", False) is not False:
        return None
    command = sup.get("command", ["sipedge"])  # the default: appliance/params.py
    if not (isinstance(command, list) and command and all(isinstance(c, str) for c in command)):
        return None
    if rejects(read_record(rejected_path(args.data_dir)), text):
        return None
    return [*command, "--config", str(args.boot_config)]


def launch_early(args: argparse.Namespace) -> ProxyProcess | None:
    """Start the first proxy on the boot file before the rest of the supervisor is imported
    and built, and before the config is validated, in the plain case (plain_boot_argv); or
    take over the one run-supervisor started already (--early-proxy). The loop adopts it as
    its first spawn only if it is what the choice would run (Supervisor._adopt_early), else
    it is killed and the right one started."""
    if args.early_proxy:
        return inherit_early(args)
    argv = plain_boot_argv(args)
    if argv is None:
        return None
    from .process import ProxyProcess

    proc = ProxyProcess(argv, cwd=proxy_cwd(args))
    try:
        proc.launch()
    except OSError as exc:  # the loop's own spawn reports it and applies the policy
        log.error("cannot start proxy argv=%s error=%s", proc.argv, exc)
        return None
    mark("proxy-launched")
    _yield_cpu(True)
    return proc


def inherit_early(args: argparse.Namespace) -> ProxyProcess | None:
    """The proxy run-supervisor started (`sipedge --config BOOT_CONFIG` in the data dir, see
    rootfs/usr/libexec/sipedge/run-supervisor) before it exec'd this program: ours to
    supervise when the boot file is the plain case and it runs what that case runs; else
    stopped at once (the loop starts the right one)."""
    import os

    from .process import ProxyProcess

    try:
        pid_text, fd_text = args.early_proxy.split(":")
        pid, fd = int(pid_text), int(fd_text)
    except ValueError:
        log.error("--early-proxy %r: expected PID:FD", args.early_proxy)
        return None
    try:
        cwd: str | None = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        cwd = None
    if cwd == os.path.realpath(args.data_dir):
        cwd = str(args.data_dir)
    elif cwd == os.getcwd():
        cwd = None  # where the loop's spawn runs it without a data dir
    try:
        proc = ProxyProcess.inherit(["sipedge", "--config", str(args.boot_config)], pid, fd, cwd)
    except ChildProcessError:
        log.error("--early-proxy pid=%d is not a child of this process", pid)
        return None
    except OSError as exc:  # its output is lost: stop it, the loop starts another
        log.error("cannot take over the proxy run-supervisor started pid=%d fd=%d: %s",
                  pid, fd, exc)
        import signal

        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return None
    if plain_boot_argv(args) != proc.argv:
        log.warning("proxy run-supervisor started pid=%d is not what the boot file runs: "
                    "stopped", pid)
        proc.discard()
        return None
    _yield_cpu(True)
    return proc


def note_run_ok(path: Path) -> None:
    """--run-state: this run is no fast failure (run-supervisor reads it at the next start)."""
    try:
        path.write_text("ok\n", encoding="ascii")
    except OSError as exc:
        log.warning("cannot write %s: %s", path, exc)


def _yield_cpu(on: bool) -> None:
    """While the early proxy starts, the supervisor's own imports and set-up run at a lower
    priority (nice 10), so on a small board the proxy gets the CPU first; back to normal
    before the loop (root may raise it again; elsewhere it stays lower, harmlessly)."""
    import os

    try:
        os.setpriority(os.PRIO_PROCESS, 0, 10 if on else 0)
    except (OSError, AttributeError):
        pass


def wait_boot_jobs(paths: tuple[Path, ...], timeout: float = BOOT_WAIT_S) -> None:
    """Until the init scripts' background jobs behind `paths` are done (the files are gone),
    at most `timeout` seconds in all."""
    import time

    deadline = time.monotonic() + timeout
    for path in paths:
        waited = False
        while path.exists():
            if time.monotonic() > deadline:
                log.warning("boot job still running after %.0f s (%s); going on", timeout, path)
                return
            waited = True
            time.sleep(0.1)
        if waited:
            log.info("boot job done (%s)", path.name)


def main(argv: list[str] | None = None) -> int:
    mark("supervisor-start")
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().addHandler(RING)
    if args.hash_password:
        import getpass

        from .auth import hash_password

        if sys.stdin.isatty():
            pw = getpass.getpass("password: ")
        else:
            pw = sys.stdin.readline().rstrip("\n")
        if not pw:
            print("empty password", file=sys.stderr)
            return 2
        print(hash_password(pw))
        return 0
    try:
        args.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.error("data dir unusable dir=%s error=%s", args.data_dir, exc)
    if args.show_choice:
        import json

        from .sdconfig import BootConfigManager

        choice = BootConfigManager(args.boot_config, args.data_dir).select()
        print(json.dumps(choice.as_dict(), indent=2))
        return 0
    from ..errors import EdgeError

    try:
        early = launch_early(args)
        source, choice = choose_config(args)
        import asyncio

        rc = asyncio.run(serve(args, source, choice, early))
    except EdgeError as exc:
        log.error("supervisor failed: %s", exc)
        return 1
    if rc == 0 and args.run_state is not None:
        note_run_ok(args.run_state)
    return rc


if __name__ == "__main__":
    sys.exit(main())
