"""auth: digest authentication of subscribers (RFC 3261 22, RFC 7616, RFC 8760).
See README.md."""

from .. import ModuleSpec
from .params import AuthParams
from .rpc import RPC

MODULE = ModuleSpec(name="auth", params=AuthParams, depends=("registrar",), rpc=RPC,
                    script_api="sipedge.modules.auth.api")
