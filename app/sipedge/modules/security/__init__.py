"""security: flood blocking (pike), failed-login blocking (fail2ban), scanner User-Agent
deny list and per-listener CIDR ACLs. See README.md."""

from .. import ModuleSpec
from .params import SecurityParams
from .rpc import RPC

MODULE = ModuleSpec(name="security", params=SecurityParams, rpc=RPC,
                    script_api="sipedge.modules.security.api")
