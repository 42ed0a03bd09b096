"""LED patterns per panel state, for two LEDs by role: "status" and "error".

A pattern is a tuple (mode, on_ms, off_ms) with mode "on", "off" or "blink". A Linux box maps
"blink" to the LED `timer` trigger; a microcontroller calls `level_at()` from its main loop.
"""

from . import status as st

OFF = ("off", 0, 0)
ON = ("on", 0, 0)

PATTERNS = {
    st.BOOTING: {"status": ("blink", 500, 500), "error": OFF},
    st.HEALTHY: {"status": ON, "error": OFF},
    st.DEGRADED: {"status": ON, "error": ("blink", 1000, 1000)},
    st.CONFIG_ERROR: {"status": ("blink", 1000, 1000), "error": ("blink", 150, 150)},
    st.FAILED: {"status": OFF, "error": ON},
    st.UPGRADING: {"status": ("blink", 100, 100), "error": OFF},
}

ROLES = ("status", "error")


def pattern_for(state, role):
    """(mode, on_ms, off_ms) of LED `role` in panel state `state`."""
    try:
        return PATTERNS[state][role]
    except KeyError:
        raise ValueError("unknown panel state or LED role: %s/%s" % (state, role))


def level_at(pattern, t_ms):
    """Brightness (0 or 1) of `pattern` at time `t_ms` (any monotonic millisecond counter)."""
    mode, on_ms, off_ms = pattern
    if mode == "on":
        return 1
    if mode == "off":
        return 0
    if mode != "blink":
        raise ValueError("unknown LED mode: %s" % mode)
    period = on_ms + off_ms
    if period <= 0:
        return 0
    return 1 if (t_ms % period) < on_ms else 0
