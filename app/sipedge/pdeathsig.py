"""PR_SET_PDEATHSIG: SIGTERM when the parent process dies, even by SIGKILL.

Used by a worker (its parent: the proxy's main process), by a proxy or service the supervisor
forks (in the child before exec) and by the proxy run-supervisor starts for the supervisor it
then execs: none of them may outlive its parent holding the SIP ports. Standard library only
and cheap to import: the proxy's start calls it before its heavy imports.
"""

import signal
import sys

PR_SET_PDEATHSIG = 1


def term_with_parent() -> None:
    """Ask the kernel for SIGTERM when the parent dies (Linux; elsewhere nothing). The caller
    checks afterwards whether the parent is gone already."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass
