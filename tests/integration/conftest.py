"""Fixtures for integration tests: a real sipedge process and real SIPp peers on 127.0.0.1.

`sipedge_factory(listeners, workers, extra)` starts `python -m sipedge --config FILE` and waits
until every worker reports alive on the control socket; `sipp` runs SIPp scenarios. The
helpers live in sip_harness.py (import them from there, not from conftest).
"""

from __future__ import annotations

import pytest

from sip_harness import HAVE_SIPP, SipEdge, Sipp, make_config


@pytest.fixture
def sipedge_factory(tmp_path):
    """Start sipedge instances: factory(listeners, workers=1, extra='', name='sipedge')."""
    started: list[SipEdge] = []

    def factory(listeners, workers: int = 1, extra: str = "", name: str = "sipedge",
                log_level: str = "info") -> SipEdge:
        ctl = str(tmp_path / f"{name}.ctl")
        edge = SipEdge(tmp_path, make_config(ctl, listeners, workers, extra, log_level), name)
        started.append(edge)
        return edge.start(workers)

    yield factory
    for edge in started:
        rc = edge.stop()
        assert rc == 0, f"sipedge exited rc={rc}:\n{edge.log()}"
        problems = edge.log_problems()  # issue 14: no exception may escape a handler
        assert not problems, f"exception in the proxy log: {problems[:5]}\n{edge.log()}"


@pytest.fixture
def sipp(tmp_path):
    if not HAVE_SIPP:
        pytest.skip("SIPp (Debian sip-tester) not installed")
    runner = Sipp(tmp_path)
    yield runner
    runner.stop()
