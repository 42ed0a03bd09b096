"""Config sections of the appliance: [supervisor], [watchdog], [panel], [management], [network].

The config loader imports this module, which registers the sections. Every field is documented
here; `docs/appliance.md` explains how they work together.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config.schema import option, section


@section("supervisor")
@dataclass(frozen=True)
class SupervisorParams:
    """How `sipedge-supervisor` runs, watches and restarts the proxy (procd-style respawn)."""

    command: list[str] = option(default_factory=lambda: ["sipedge"],
                                doc="proxy command; `--config FILE` is appended", reloadable=False)
    respawn_threshold_s: float = option(3600.0, "a proxy that ran at least this long before it "
                                        "exited resets the crash counter", min=1)
    respawn_timeout_s: float = option(5.0, "delay before the first restart; doubles per crash",
                                      min=0, max=3600)
    respawn_max_delay_s: float = option(60.0, "upper bound of the restart delay", min=0, max=3600)
    respawn_retry: int = option(5, "quick crashes in a row before giving up (FAILED)", min=0,
                                max=1000)
    term_timeout_s: float = option(10.0, "SIGTERM to SIGKILL escalation delay", min=0.1, max=600)
    start_timeout_s: float = option(120.0, "time a new proxy has to report healthy (Python "
                                    "starts slowly on small boards)", min=1, max=3600)
    health_interval_s: float = option(2.0, "how often the proxy is probed", min=0.1, max=600)
    health_timeout_s: float = option(20.0, "no healthy probe for this long means hung: restart",
                                     min=0.5, max=3600)
    probe_timeout_s: float = option(3.0, "how long one probe waits for an answer", min=0.1,
                                    max=60)
    max_loop_lag_ms: float = option(500.0, "event-loop lag above which the proxy counts as "
                                    "unhealthy", min=1)
    options_probe: bool = option(True, "also send a SIP OPTIONS to the first UDP listener")
    rpc_socket: str = option("/run/sipedge/supervisor.sock", "the supervisor's JSON-RPC socket",
                             reloadable=False)
    config_good_after_s: float = option(30.0, "healthy time after which a new boot config "
                                        "becomes last-known-good", min=0)
    config_trial_s: float = option(180.0, "a new boot config whose proxy is not running "
                                   "healthy this long after it was applied is rolled back "
                                   "to last-known-good (so are two failed starts in a row "
                                   "or FAILED); with [instances], any required instance "
                                   "the file changed (docs/instances.md)", min=1)
    mark_good_after_s: float | None = option(None, "deprecated: use `[update] "
                                             "mark_good_after_s` (a value here is still used "
                                             "for it, with a warning; setting both is an "
                                             "error)", min=0)


@section("watchdog")
@dataclass(frozen=True)
class WatchdogParams:
    """Hardware watchdog, owned by the supervisor and petted only while the proxy is healthy."""

    enabled: bool = option(True, "open and pet the watchdog device", reloadable=False)
    device: str = option("/dev/watchdog", "watchdog device node", reloadable=False)
    timeout_s: int = option(15, "hardware timeout in seconds (WDIOC_SETTIMEOUT)", min=1, max=600)
    pet_interval_s: float = option(5.0, "keep-alive interval while healthy", min=0.1, max=300)
    reset_on_failed: bool = option(False, "stop petting once the proxy is FAILED (crash loop), "
                                   "so the box resets; default keeps running and shows FAILED")
    hang_limit: int = option(3, "hang recoveries (kills for the start or health timeout) in a "
                             "row, without `[supervisor] respawn_threshold_s` of health in "
                             "between, after which the proxy is FAILED and petting stops, so "
                             "the box resets (0: never, keep restarting)", min=0, max=1000)
    max_resets: int = option(3, "boot-loop guard: once this many deliberate watchdog resets "
                             "happened in a row (recorded on the data partition), the "
                             "supervisor no longer lets the watchdog fire; it stays FAILED and "
                             "keeps petting (0: no limit)", min=0, max=1000)
    reset_record_clear_s: float = option(600.0, "healthy time after which the record of "
                                         "earlier watchdog resets is cleared (the guard's "
                                         "count starts again)", min=0.1)


@section("panel")
@dataclass(frozen=True)
class PanelParams:
    """Front panel: status LEDs (sysfs LED class) and an HD44780 LCD behind a PCF8574."""

    status_led: str = option("", "LED class name of the status LED; a glob such as "
                             "`input*::numlock` or comma-separated candidates also work "
                             "(empty: the board's STATUS_LED; `none`: no LED)")
    error_led: str = option("", "LED class name of the error LED, as `status_led` "
                            "(empty: the board's ERROR_LED; `none`: no LED)")
    lcd_bus: int = option(-1, "I2C bus number of the LCD backpack (-1: no LCD)", min=-1, max=255)
    lcd_address: int = option(0x27, "I2C address of the PCF8574", min=0x03, max=0x77)
    lcd_cols: int = option(16, "LCD columns", choices=(8, 16, 20, 24, 40))
    lcd_rows: int = option(2, "LCD rows", choices=(1, 2, 4))
    page_interval_s: float = option(4.0, "time each LCD page is shown", min=0.5, max=600)


@section("management")
@dataclass(frozen=True)
class ManagementParams:
    """Serial management console."""

    console_device: str = option("", "serial device of the console, e.g. /dev/ttyS1; `auto`: "
                                 "the board's management port (board data MGMT_TTY; the "
                                 "shipped config uses it) (empty: no console)",
                                 reloadable=False)
    baud: int = option(115200, "console baud rate",
                       choices=(9600, 19200, 38400, 57600, 115200))
    password_hash: str = option("", "console password as made by `sipedge-supervisor "
                                "--hash-password`: pbkdf2_sha256$iterations$salt$hash (empty: "
                                "the password chosen on the console's first login, kept "
                                "hashed in /data/config/console-password)", secret=True)
    max_failures: int = option(3, "failed logins before lock-out", min=1, max=100)
    lockout_s: float = option(60.0, "lock-out time after too many failed logins", min=1)
    idle_logout_s: float = option(600.0, "log out after this long without input", min=10)


@dataclass(frozen=True)
class InterfaceParams:
    """One physical interface."""

    name: str = option(doc="kernel interface name, e.g. eth0", required=True)
    up: bool = option(True, "administrative link state")
    dhcp: bool = option(False, "IPv4 from DHCP: the supervisor runs and watches BusyBox "
                        "`udhcpc` on this interface (then `addresses` may hold IPv6 only)")
    addresses: list[str] = option(default_factory=list, doc="addresses with prefix length, "
                                  "e.g. 192.0.2.10/24 or 2001:db8::10/64")
    mtu: int | None = option(None, "MTU (unset: leave as is)", min=68, max=65535)


@dataclass(frozen=True)
class VlanParams:
    """An 802.1Q sub-interface."""

    name: str = option(doc="name of the VLAN interface, e.g. eth0.100", required=True)
    link: str = option(doc="parent interface", required=True)
    id: int = option(doc="VLAN id", required=True, min=1, max=4094)
    up: bool = option(True, "administrative link state")
    dhcp: bool = option(False, "IPv4 from DHCP: the supervisor runs and watches BusyBox "
                        "`udhcpc` on this VLAN once it exists (then `addresses` may hold IPv6 "
                        "only)")
    addresses: list[str] = option(default_factory=list, doc="addresses with prefix length")
    mtu: int | None = option(None, "MTU, at most the parent's (unset: leave as is)", min=68,
                             max=65535)


@dataclass(frozen=True)
class RouteParams:
    """A static route."""

    dst: str = option(doc="destination prefix, or `default`", required=True)
    gateway: str = option("", "next-hop address (empty: on-link via `dev`)")
    dev: str = option("", "output interface (empty: chosen by the kernel)")
    metric: int = option(0, "route metric", min=0, max=2**31 - 1)


@section("network")
@dataclass(frozen=True)
class NetworkParams:
    """Network set-up applied through netlink by the supervisor."""

    manage: bool = option(False, "apply this section at start and on reload; off leaves the "
                          "network to the OS")
    hostname: str = option("", "host name (empty: leave as is)")
    hostname_file: str = option("/run/hostname", "where the host name is also written (the "
                                "root file system is read-only; empty: nowhere)")
    dns_servers: list[str] = option(default_factory=list, doc="resolvers written to resolv.conf "
                                    "(then DHCP leases do not overwrite it)")
    resolv_conf: str = option("/etc/resolv.conf", "where the DNS servers are written (a symlink "
                              "is followed: the image links it to /run/resolv.conf)")
    ntp_servers: list[str] = option(default_factory=list, doc="NTP servers: `HOST`, "
                                    "`HOST:PORT` or `[IPv6]:PORT`; the supervisor runs and "
                                    "watches chronyd (BusyBox `ntpd` where chrony is not "
                                    "installed), stepping the clock when it is off by over "
                                    "1 s (empty: no NTP)")
    interface: list[InterfaceParams] = option(default_factory=list, doc="interfaces "
                                              "(`[[network.interface]]`)")
    vlan: list[VlanParams] = option(default_factory=list, doc="VLANs (`[[network.vlan]]`)")
    route: list[RouteParams] = option(default_factory=list, doc="static routes "
                                      "(`[[network.route]]`)")


@section("update")
@dataclass(frozen=True)
class UpdateParams:
    """Field updates: RAUC bundles into the A/B slots, the trial boot, release channels
    (docs/updates.md)."""

    mark_good_after_s: float = option(60.0, "healthy proxy time after which the booted slot "
                                      "is marked good (RAUC mark-good; the bootloader stops "
                                      "counting its tries; 0: never)", min=0)
    trial_timeout_s: float = option(600.0, "a freshly installed slot that is not marked good "
                                    "this long after boot (or whose proxy is FAILED) is "
                                    "rebooted, spending one of its boot tries; after the "
                                    "last try the bootloader returns to the old slot",
                                    min=10, max=86400)
    channel: str = option("stable", "release channel the box follows: stable or nightly",
                          choices=("stable", "nightly"))
    url: str = option("", "base URL of the channel folders (http or https; the index is "
                      "URL/CHANNEL/index.json); empty: no channel checks")
    check_interval_s: float = option(86400.0, "how often the channel is checked", min=60)
    auto_install: bool = option(False, "download and install a newer release by itself "
                                "(inside `window`); default: only report it")
    window: str = option("", "local time window for automatic installs, HH:MM-HH:MM (may "
                         "cross midnight); empty: any time")
    max_bundle_bytes: int = option(1 << 30, "largest bundle downloaded", min=1 << 20)
