"""The offline image ships the compiled build (issue 15): the hot modules of
sipedge/compiled.py are C extension modules in the image's dist-packages, and the image's
own python3 loads them. No boot: the built root filesystem (out/image-amd64/rootfs, what
rootfs.ext4 was made from) is inspected, and its python3 is run with chroot (same
architecture as the host). The guest tests then run this build end to end.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SITE = "usr/lib/python3/dist-packages/sipedge"


def _modules() -> tuple[str, ...]:
    spec = importlib.util.spec_from_file_location("sipedge_compiled", REPO / "app/sipedge/compiled.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.MODULES


def test_image_ships_the_compiled_build(sipedge_image):
    build = sipedge_image.manifest.get("app_build", {})
    if build.get("build") != "compiled":
        if importlib.util.find_spec("Cython") is None:
            pytest.skip(f"image built pure Python: {build.get('why')}")
        pytest.fail(f"image built pure Python although Cython is here: {build}")
    rootfs = sipedge_image.bindir.parent / "rootfs"
    site = rootfs / SITE
    for module in _modules():
        rel = Path(*module.split(".")[1:])
        so = sorted((site / rel.parent).glob(rel.name + ".cpython-*.so"))
        assert so, f"{module}: no extension module in the image ({site / rel.parent})"
        assert (site / rel).with_suffix(".py").exists(), f"{module}: the .py source is shipped too"
    if os.geteuid() != 0 or sipedge_image.arch != "amd64" or not sys.platform.startswith("linux"):
        return
    # the image's python3 (Debian's) imports them: compiled, all of them
    out = subprocess.run(
        ["chroot", str(rootfs), "python3", "-c",
         "import json, sipedge.compiled as c, sipedge.sip.message as m\n"
         "print(json.dumps({'status': c.status(), 'file': m.__file__}))"],
        check=True, capture_output=True, text=True, timeout=120).stdout
    got = json.loads(out)
    assert all(got["status"].values()), got
    assert got["file"].startswith("/" + SITE) and got["file"].endswith(".so"), got
