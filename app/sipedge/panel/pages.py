"""What the LCD shows: a list of pages, each a list of exactly `rows` strings of `cols` chars.

`info` is a plain dict (from the supervisor, or from UART frames on a microcontroller):

    state          panel state (see status.py)
    config_errors  list of "file:line: key: reason" strings
    addresses      list of "iface addr" strings
    registrations  int or None          calls  int or None
    transactions   int or None          upstreams  list of (name, up) pairs
    alarms         list of strings      version, slot  strings
    problem        short text of the supervisor's last problem
"""

from . import status as st

TITLES = {
    st.BOOTING: "STARTING",
    st.HEALTHY: "OK",
    st.DEGRADED: "DEGRADED",
    st.CONFIG_ERROR: "CONFIG ERROR",
    st.FAILED: "FAILED",
    st.UPGRADING: "UPGRADING",
}


def fit(text, cols):
    """`text` cut or padded with spaces to exactly `cols` characters (str.ljust is missing
    in MicroPython)."""
    text = str(text)
    if len(text) >= cols:
        return text[:cols]
    return text + " " * (cols - len(text))


def _basename(path):
    i = path.rfind("/")
    return path[i + 1:] if i >= 0 else path


def error_location(error):
    """ "sipedge.toml:12" from "/boot/sipedge.toml:12: key: reason"."""
    parts = error.split(":")
    if len(parts) >= 2 and parts[1].strip().isdigit():
        return _basename(parts[0]) + ":" + parts[1].strip()
    return _basename(parts[0])


def error_detail(error):
    """ "key: reason" from "file:line: key: reason"."""
    parts = error.split(": ", 1)
    return parts[1] if len(parts) == 2 else error


def fit_address(line, cols):
    """ "eth0 10.0.2.15/24" made to fit: the prefix length goes first, then the interface
    name; an address is never cut."""
    if len(line) <= cols:
        return line
    name, _, cidr = line.partition(" ")
    addr = cidr.split("/")[0] if cidr else name
    if cidr and len(name) + 1 + len(addr) <= cols:
        return name + " " + addr
    return addr


def _page(lines, cols, rows):
    out = []
    for line in lines[:rows]:
        out.append(fit(line, cols))
    while len(out) < rows:
        out.append(" " * cols)
    return out


def _count(value):
    return "-" if value is None else str(value)


def build_pages(info, cols, rows):
    """All pages to rotate through. A config error comes first, so it is seen at once."""
    state = info.get("state", st.BOOTING)
    pages = []
    errors = info.get("config_errors") or []
    if errors:
        first = errors[0]
        lines = ["CONFIG ERROR", error_location(first)]
        if rows > 2:
            lines.append(error_detail(first))
            more = len(errors) - 1
            lines.append(("+%d more" % more) if more else "running fallback")
        pages.append(_page(lines, cols, rows))
    title = TITLES.get(state, state.upper())
    head = ["sipedge " + title]
    addresses = [fit_address(a, cols) for a in info.get("addresses") or []]
    head.append(addresses[0] if addresses else "no address")
    if rows > 2:
        head.append(info.get("problem") or "")
        head.append("v%s %s" % (info.get("version", "?"), info.get("slot") or ""))
    pages.append(_page(head, cols, rows))
    if len(addresses) > 1:
        for i in range(1, len(addresses), rows):
            pages.append(_page(addresses[i:i + rows], cols, rows))
    if rows > 2:
        traffic = ["reg " + _count(info.get("registrations")),
                   "calls " + _count(info.get("calls")),
                   "trans " + _count(info.get("transactions"))]
    else:
        traffic = ["reg " + _count(info.get("registrations")) +
                   " call " + _count(info.get("calls")),
                   "trans " + _count(info.get("transactions"))]
    pages.append(_page(traffic, cols, rows))
    for name, state, listen, problem in info.get("instances") or []:  # [instances]: one each
        lines = [fit(name, cols - len(state) - 1) + " " + state, fit_address(listen, cols)]
        if rows > 2:
            lines.append(fit(problem or "", cols))
        pages.append(_page(lines, cols, rows))
    upstreams = info.get("upstreams") or []
    if upstreams:
        lines = []
        for name, up in upstreams:
            mark = "UP" if up else "DOWN"
            lines.append(fit(name, cols - len(mark) - 1) + " " + mark)
        for i in range(0, len(lines), rows):
            pages.append(_page(lines[i:i + rows], cols, rows))
    alarms = info.get("alarms") or []
    if alarms:
        for i in range(0, len(alarms), rows - 1 if rows > 1 else 1):
            chunk = alarms[i:i + (rows - 1 if rows > 1 else 1)]
            pages.append(_page(["ALARM"] + chunk if rows > 1 else chunk, cols, rows))
    if rows <= 2:
        slot = info.get("slot")  # none on an image without A/B slots: say nothing
        pages.append(_page(["v%s" % info.get("version", "?"), ("slot " + slot) if slot else ""],
                           cols, rows))
    return pages


def page_at(pages, t_ms, interval_ms):
    """The page to show at time `t_ms` when each page stays `interval_ms`."""
    if not pages:
        return []
    if interval_ms <= 0:
        return pages[0]
    return pages[(t_ms // interval_ms) % len(pages)]
