"""Config section `[dispatcher]` (importing this module registers it with the loader)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...config.schema import option, section
from .settings import Settings, parse_code_pattern

if TYPE_CHECKING:  # the table is imported where destinations are made (not for a config
    # without any: every config load validates this section)
    from .table import Destination, DispatcherTable


@dataclass(frozen=True)
class DestinationParams:
    """One destination (the same columns as a line of the list file)."""

    set: int = option(doc="set id the destination belongs to", required=True, min=0,
                      max=2147483647)
    uri: str = option(doc="SIP URI of the destination (numeric host, or a name resolved "
                      "through [dns])", required=True)
    flags: int = option(0, "start state bits as in Kamailio: 1 inactive, 2 trying "
                        "(probing-only), 4 disabled, 8 probe even with probe_mode = "
                        "\"flagged\"", min=0, max=15)
    priority: int = option(0, "order inside the set, higher first (`priority` algorithm)")
    weight: int = option(1, "share for the `weight` algorithm", min=0, max=1000)
    duid: str = option("", "destination unique id (free text, shown by dispatcher.list)")
    attrs: str = option("", "further `name=value;...` attributes, kept verbatim")


@section("dispatcher")
@dataclass(frozen=True)
class DispatcherParams:
    """Load balancing and fail-over over sets of destinations, with health probing."""

    list_file: str = option("", "Kamailio-style list file (`set uri flags priority attrs` "
                            "per line), read at start and on dispatcher.reload; relative to "
                            "the config file. Its sets are added to `destination` entries")
    destination: list[DestinationParams] = option(default_factory=list,
                                                  doc="destinations given in the config")
    probe_interval_s: float = option(10.0, "how often each probed destination gets a probe",
                                     min=0.1, max=3600)
    probe_timeout_s: float = option(2.0, "a probe without a final reply after this long has "
                                    "failed (at most probe_interval_s)", min=0.05, max=600)
    probe_method: str = option("OPTIONS", "request method of probes",
                               choices=("OPTIONS", "INFO", "NOTIFY"))
    probe_from: str = option("sip:dispatcher@localhost", "From URI of probes")
    probe_address: str = option("", "local address the probe socket binds (empty: the first "
                                "UDP listener's address)", reloadable=False)
    probe_mode: str = option("all", "probe every active destination, or only those with "
                             "flag 8; inactive and probing-only ones are always probed",
                             choices=("all", "flagged"))
    probe_ok_codes: list[str] = option(default_factory=lambda: ["2xx"],
                                       doc="probe replies that count as alive, e.g. "
                                       "[\"2xx\", \"404\", \"405\"]")
    inactive_after: int = option(3, "failed probes or failed relays in a row that make a "
                                 "destination inactive", min=1, max=100)
    active_after: int = option(2, "successful probes in a row that make an inactive or "
                               "probing-only destination active", min=1, max=100)
    reload_min_interval_s: float = option(5.0, "dispatcher.reload is refused if the last "
                                          "one was less than this long ago", min=0, max=3600)

    def settings(self) -> Settings:
        """The core's runtime knobs. Raises ValueError when they contradict each other."""
        for code in self.probe_ok_codes:
            parse_code_pattern(code)
        return Settings(probe_interval_s=self.probe_interval_s,
                        probe_timeout_s=self.probe_timeout_s,
                        inactive_after=self.inactive_after, active_after=self.active_after,
                        probe_mode=self.probe_mode, ok_codes=tuple(self.probe_ok_codes))

    def config_destinations(self) -> list[Destination]:
        """The `[[dispatcher.destination]]` entries, validated. Raises ValueError naming
        `destination[i].field`."""
        out: list[Destination] = []
        if not self.destination:
            return out
        from .table import make_destination

        for i, d in enumerate(self.destination):
            try:
                out.append(make_destination(d.set, d.uri, d.flags, d.priority, d.attrs,
                                            weight=d.weight, duid=d.duid, position=i))
            except ValueError as exc:
                raise ValueError(f"destination[{i}].{exc}") from None
        return out


def build_config_table(params: DispatcherParams,
                       list_table: DispatcherTable | None = None) -> DispatcherTable:
    """Config destinations plus those of the list file (config ones first in each set when
    priorities are equal). A (set, URI) given twice is an error."""
    from .table import Destination, build_table

    dests = params.config_destinations()
    seen = {d.key for d in dests}
    if list_table is not None:
        offset = len(dests)
        for d in list_table.destinations():
            if d.key in seen:
                raise ValueError(f"list_file: {d.uri} in set {d.set_id} is also in "
                                 "[[dispatcher.destination]]")
            dests.append(Destination(d.set_id, d.uri, d.flags, d.priority, d.weight, d.duid,
                                     d.attrs, offset + d.position))
    return build_table(dests, list_table.source if list_table is not None else "config")
