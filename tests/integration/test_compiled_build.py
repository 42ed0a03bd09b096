"""The compiled build (Cython, app/setup.py) against the pure-Python one: same source, same
behaviour, and the compiled build is really what runs when it is built.

The compiled tree is built once per source state by tools/compile/build.py under
out/compiled/<key> (about 2 CPU-minutes; reused while app/sipedge is unchanged), then:
- the parser and the proxy rules are fed the parser corpus plus seeded mutations of it in
  both builds, and every result must be identical (dump_parse.py);
- the SIP unit tests (parser, headers, transactions, proxy core, script API) run again on
  the compiled build, and one stateless and one stateful SIPp call test do;
- the compiled modules must load from C extensions (and the pure tree from .py).
Skipped, with the reason, when Cython or a C compiler is missing (pure Python then is the
only build, and the rest of the suite tests it).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app"
DUMP = Path(__file__).parent / "compiled" / "dump_parse.py"


def _build_module():
    spec = importlib.util.spec_from_file_location("compile_build", REPO / "tools/compile/build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _missing() -> str | None:
    if importlib.util.find_spec("Cython") is None:
        return "Cython is not installed (tests/requirements.txt)"
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if not shutil.which(cc):
        return f"no C compiler ({cc})"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "no Python.h for this interpreter"
    return None


@pytest.fixture(scope="module")
def compiled_tree() -> Path:
    why = _missing()
    if why:
        pytest.skip(f"compiled build not possible: {why}")
    build = _build_module()
    return build.cached(sys.executable, build.system_include(sys.executable))


def _env(pythonpath: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(pythonpath), "PYTHONDONTWRITEBYTECODE": "1"}


def _status(pythonpath: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", "import json, sipedge.compiled as c, sipedge.sip.message as m\n"
         "print(json.dumps({'status': c.status(), 'file': m.__file__, 'summary': c.summary()}))"],
        env=_env(pythonpath), check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def test_compiled_build_is_what_loads(compiled_tree):
    comp = _status(compiled_tree)
    assert all(comp["status"].values()), comp
    assert comp["file"].startswith(str(compiled_tree)) and comp["file"].endswith(".so"), comp
    assert comp["summary"].startswith("compiled ("), comp
    pure = _status(APP)
    assert not any(pure["status"].values()), pure
    assert pure["file"].endswith(".py") and pure["summary"].startswith("pure Python"), pure


def test_parser_and_proxy_rules_identical_in_both_builds(compiled_tree):
    outs = {}
    for name, path in (("pure", APP), ("compiled", compiled_tree)):
        res = subprocess.run([sys.executable, str(DUMP)], env=_env(path), capture_output=True,
                             text=True, timeout=600)
        assert res.returncode == 0, f"{name}: {res.stderr[-3000:]}"
        outs[name] = res.stdout.splitlines()
    pure, comp = outs["pure"], outs["compiled"]
    total = json.loads(pure[-1])["total"]
    assert total > 1000 and len(pure) == len(comp) == total + 1
    diffs = [(a, b) for a, b in zip(pure, comp) if a != b]
    assert not diffs, (f"{len(diffs)} of {total} inputs differ; first:\n"
                       f"pure:     {diffs[0][0][:2000]}\ncompiled: {diffs[0][1][:2000]}")
    # the corpus reaches both outcomes and the proxy rules
    assert sum('"start"' in line for line in pure) > 100
    assert sum('"parse": ["error"' in line for line in pure) > 100
    assert sum('"proxy": ["ok"' in line for line in pure) > 50


UNIT_DIRS = ("tests/unit/sip", "tests/unit/proxy", "tests/unit/script")
SIPP_TESTS = (
    "tests/integration/test_stateless_proxy.py::test_calls_through_record_routing_proxy[1]",
    "tests/integration/test_stateful_proxy.py::test_404_failure_route_relays_to_second_uas[1]",
)


def _pytest_on(tree: Path, args: list[str], timeout: int) -> subprocess.CompletedProcess:
    # the check runs in the same interpreter as the tests: the compiled modules are loaded
    code = ("import sys, pytest, sipedge.compiled as c\n"
            "st = c.status()\n"
            "assert all(st.values()), f'not the compiled build: {st}'\n"
            "sys.exit(pytest.main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, "-c", "tests/pytest.ini", "-q",
                           "-p", "no:cacheprovider", *args],
                          cwd=REPO, env=_env(tree), capture_output=True, text=True,
                          timeout=timeout)


def test_sip_unit_tests_pass_on_the_compiled_build(compiled_tree):
    res = _pytest_on(compiled_tree, list(UNIT_DIRS), timeout=900)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]


def test_sipp_calls_through_the_compiled_proxy(compiled_tree):
    res = _pytest_on(compiled_tree, list(SIPP_TESTS), timeout=900)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    assert "2 passed" in res.stdout, res.stdout[-3000:]
