"""Loading a config imports every module's `params` (to know every section), in the supervisor
and in every proxy. It must not import the modules' runtimes and their libraries: that cost
memory and boot time in processes that never run them (issue 13)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

NOT_AT_LOAD = ("h11", "dns", "sipedge.diameter", "sipedge.modules.diameter.core",
               "sipedge.modules.http_client.client", "sipedge.modules.ims_pcscf.core",
               "sipedge.modules.enum.core", "sipedge.modules.uac.rpc", "asyncio",
               "sipedge.modules.dispatcher.core", "sipedge.modules.dispatcher.table")


def test_the_proxy_start_imports_no_fallback_helper():
    """uuid (it imports platform) and tempfile (shutil, random) are not on the proxy's path
    to its first answer: each cost tens of milliseconds under emulation."""
    code = ("import json, sys\n"
            "import sipedge.cli\n"
            "from sipedge.app import load_config_or_exit, run\n"
            f"load_config_or_exit({str(REPO / 'board/common/sipedge.toml')!r})\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(REPO / "app")}).stdout
    loaded = set(json.loads(out))
    assert not loaded & {"uuid", "platform", "tempfile", "sipedge.modules.dispatcher.core"}


def test_loading_the_shipped_config_imports_no_module_runtime():
    code = ("import json, sys\n"
            "from sipedge.config import load_file\n"
            f"load_file({str(REPO / 'board/common/sipedge.toml')!r})\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(REPO / "app")}).stdout
    loaded = json.loads(out)
    assert [m for m in loaded if m.startswith(NOT_AT_LOAD)] == []


def test_a_module_package_imports_its_parts_on_first_use():
    code = ("import sys\n"
            "import sipedge.modules.dispatcher as d\n"
            "assert 'sipedge.modules.dispatcher.core' not in sys.modules\n"
            "assert d.MODULE.name == 'dispatcher' and d.MODULE.rpc\n"
            "from sipedge.modules.dispatcher import Dispatcher, parse_list\n"
            "assert Dispatcher.__module__ == 'sipedge.modules.dispatcher.core'\n"
            "assert d.Dispatcher is Dispatcher\n")
    subprocess.run([sys.executable, "-c", code], check=True,
                   env={"PYTHONPATH": str(REPO / "app")})
