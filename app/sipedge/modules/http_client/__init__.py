"""http_client: HTTP(S) requests from routing scripts, async, on asyncio streams and h11.

`h1` is the sans-IO HTTP/1.1 framing, `client.HttpClient` the pooled asyncio client.
Importing this package does not register the `[http_client]` config section (`params` does).
"""

from __future__ import annotations

from .. import ModuleSpec, lazy_package


def _spec() -> ModuleSpec:
    from .params import HttpClientParams
    from .rpc import RPC

    return ModuleSpec(name="http_client", params=HttpClientParams, depends=(), rpc=RPC,
                      script_api="sipedge.modules.http_client.api")


__getattr__ = lazy_package(__name__, {
    "HttpClient": ".client",
    "HttpConnectError": ".client",
    "HttpTimeout": ".client",
    "HttpError": ".h1",
    "HttpProtocolError": ".h1",
    "HttpTooLarge": ".h1",
    "Response": ".h1",
    "HttpClientParams": ".params",
}, _spec)

__all__ = ["HttpClient", "HttpConnectError", "HttpError", "HttpProtocolError",
           "HttpTimeout", "HttpTooLarge", "Response"]
