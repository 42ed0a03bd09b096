"""registrar: REGISTER processing (RFC 3261 10.3, RFC 3327 Path), the location service and
its SQLite store, NAT helpers. See README.md."""

from .. import ModuleSpec
from .params import RegistrarParams
from .rpc import RPC

MODULE = ModuleSpec(name="registrar", params=RegistrarParams, depends=(), rpc=RPC,
                    script_api="sipedge.modules.registrar.api")
