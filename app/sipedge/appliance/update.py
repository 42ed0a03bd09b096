"""`UpdateAgent` port on the RAUC command line (`rauc status mark-good`)."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Mapping
from typing import Any

from .watchdog import HardwareError

log = logging.getLogger("sipedge.appliance.update")


class RaucCli:
    def __init__(self, rauc: str = "rauc", timeout_s: float = 30.0) -> None:
        self.rauc = rauc
        self.timeout_s = timeout_s

    def _run(self, *args: str) -> str:
        try:
            res = subprocess.run([self.rauc, *args], capture_output=True, text=True,
                                 timeout=self.timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise HardwareError("rauc", str(exc)) from None
        if res.returncode != 0:
            raise HardwareError("rauc", f"{' '.join(args)}: rc={res.returncode} "
                                f"{res.stderr.strip()[:200]}")
        return res.stdout

    def mark_good(self) -> None:
        self._run("status", "mark-good")

    def status(self) -> Mapping[str, Any]:
        out = self._run("status", "--output-format=json")
        try:
            data = json.loads(out)
        except ValueError:
            raise HardwareError("rauc", "status: not JSON") from None
        return data if isinstance(data, dict) else {"status": data}
