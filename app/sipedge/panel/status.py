"""Which state the panel shows, from the supervisor state and the config errors."""

BOOTING = "booting"
HEALTHY = "healthy"
DEGRADED = "degraded"
CONFIG_ERROR = "config_error"
FAILED = "failed"
UPGRADING = "upgrading"

STATES = (BOOTING, HEALTHY, DEGRADED, CONFIG_ERROR, FAILED, UPGRADING)


def panel_state(supervisor_state, config_errors=0, upgrading=False, alarms=0):
    """Panel state, most urgent first: upgrading, failed, config error, degraded, healthy.

    `supervisor_state` is a supervisor state name (STARTING, RUNNING, DEGRADED, STOPPING,
    BACKOFF, FAILED, STOPPED); `config_errors` and `alarms` are counts.
    """
    if upgrading:
        return UPGRADING
    if supervisor_state == "FAILED":
        return FAILED
    if config_errors:
        return CONFIG_ERROR
    if supervisor_state == "RUNNING":
        return DEGRADED if alarms else HEALTHY
    if supervisor_state in ("DEGRADED", "STOPPING", "BACKOFF"):
        return DEGRADED
    return BOOTING
