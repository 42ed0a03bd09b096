"""uac: the proxy as a client: answer upstream 401/407 challenges (uac_auth), outbound
registrations (uac_reg), requests originated by the routing script. See README.md."""

from .. import ModuleSpec
from .params import UacParams
from .rpc import RPC

MODULE = ModuleSpec(name="uac", params=UacParams, rpc=RPC, script_api="sipedge.modules.uac.api")
