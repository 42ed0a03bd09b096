"""http_client: HTTP(S) requests from routing scripts, async, on asyncio streams and h11.

`h1` is the sans-IO HTTP/1.1 framing, `client.HttpClient` the pooled asyncio client.
Importing this package does not register the `[http_client]` config section (`params` does).
"""

from .. import ModuleSpec
from .client import HttpClient, HttpConnectError, HttpTimeout
from .h1 import HttpError, HttpProtocolError, HttpTooLarge, Response
from .params import HttpClientParams
from .rpc import RPC

MODULE = ModuleSpec(name="http_client", params=HttpClientParams, depends=(), rpc=RPC,
                    script_api="sipedge.modules.http_client.api")


__all__ = ["HttpClient", "HttpConnectError", "HttpError", "HttpProtocolError",
           "HttpTimeout", "HttpTooLarge", "Response"]
