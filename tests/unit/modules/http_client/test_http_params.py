"""[http_client] params load and give the client's arguments; the reason-phrase helper."""

from __future__ import annotations

import pytest

from sipedge.config import ConfigError, load_text
from sipedge.modules.http_client import HttpClient
from sipedge.modules.http_client.api import HttpClientApi


def test_params_load(section_module):
    section_module("sipedge.modules.http_client.params")
    cfg = load_text("[http_client]\ntimeout_s = 1.5\nmax_response_bytes = 4096\n")
    kw = cfg.http_client.client_kwargs()
    assert kw["timeout_s"] == 1.5 and kw["verify_tls"] is True and kw["ca_file"] is None
    client = HttpClient(**kw)
    assert client.max_response_bytes == 4096
    with pytest.raises(ConfigError, match="http_client.timeout_s: must be >= 0.05"):
        load_text("[http_client]\ntimeout_s = 0\n")


def test_reason_phrase():
    assert HttpClientApi.reason_phrase("route\r\nInjected: 1\n") == "route Injected: 1"
    assert HttpClientApi.reason_phrase("") == "OK"
    assert len(HttpClientApi.reason_phrase("x" * 500)) == 128
