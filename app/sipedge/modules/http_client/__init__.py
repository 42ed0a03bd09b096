"""http_client: HTTP(S) requests from routing scripts, async, on asyncio streams (stdlib only).

`h1` is the sans-IO HTTP/1.1 framing, `client.HttpClient` the pooled asyncio client.
Importing this package does not register the `[http_client]` config section (`params` does).
"""

from .client import HttpClient, HttpConnectError, HttpTimeout
from .h1 import HttpError, HttpProtocolError, HttpTooLarge, Response


def __getattr__(attr: str):
    """`MODULE` (a ModuleSpec) is built on first access: it imports `params`, which registers
    the `[http_client]` config section, and plain imports of this package must not do that."""
    if attr == "MODULE":
        from .. import ModuleSpec
        from .params import HttpClientParams
        from .rpc import RPC

        spec = ModuleSpec(name="http_client", params=HttpClientParams, depends=(), rpc=RPC,
                          script_api="sipedge.modules.http_client.api")
        globals()["MODULE"] = spec
        return spec
    raise AttributeError(attr)


__all__ = ["HttpClient", "HttpConnectError", "HttpError", "HttpProtocolError",
           "HttpTimeout", "HttpTooLarge", "Response"]
