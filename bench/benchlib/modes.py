"""Benchmark modes: what is measured, as data.

A mode names the SIPp caller and callee scenarios and one config template
per proxy.  Adding a mode (stateful, registration, dispatcher, ...) means
adding its scenario files and config templates and one Mode entry here;
bench/run.py and the proxy drivers do not change.
"""
import os
import re
from dataclasses import dataclass

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Mode:
    name: str
    description: str
    uac_scenario: str            # path of the caller scenario
    uas_scenario: str            # path of the callee scenario
    configs: dict                # proxy name -> config template path
    messages_per_call: int       # SIP messages the proxy forwards per call
    sipedge_files: tuple = ()    # extra templates rendered next to sipedge's config

    def config_template(self, proxy):
        return self.configs.get(proxy)


def _path(*parts):
    return os.path.join(HERE, *parts)


MODES = {
    "stateless": Mode(
        name="stateless",
        description="INVITE/180/200/ACK/BYE/200 through a stateless record-routing forwarder",
        uac_scenario=_path("scenarios", "stateless", "uac.xml"),
        uas_scenario=_path("scenarios", "stateless", "uas.xml"),
        configs={
            "kamailio": _path("configs", "kamailio-stateless.cfg"),
            "sipedge": _path("configs", "sipedge-stateless.toml"),
            "relay": None,  # the bare relay takes no config: it relays anything
        },
        messages_per_call=6,
    ),
    "stateful": Mode(
        name="stateful",
        description="the same calls through a transaction-stateful proxy: "
                    "record-route + t_relay (sipedge script / Kamailio tm)",
        uac_scenario=_path("scenarios", "stateless", "uac.xml"),
        uas_scenario=_path("scenarios", "stateless", "uas.xml"),
        configs={
            "kamailio": _path("configs", "kamailio-stateful.cfg"),
            "sipedge": _path("configs", "sipedge-stateful.toml"),
        },
        messages_per_call=6,
        sipedge_files=(_path("configs", "sipedge-stateful-route.py"),),
    ),
}


def render(template_path, values):
    """Replace @KEY@ placeholders; fail loudly on one left over."""
    with open(template_path) as f:
        text = f.read()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    leftover = sorted(set(re.findall(r"@[A-Z_]+@", text)))
    if leftover:
        raise ValueError(f"{template_path}: unfilled placeholders {leftover}")
    return text
