"""The AVP and command dictionary: RFC 6733 base protocol, the RFC 4006/4590/5778/7155 AVPs the
3GPP applications reuse, and the 3GPP (vendor 10415) AVPs of Cx/Dx (TS 29.229), Sh (29.329),
Rx (29.214), Gx (29.212) and S6a/S6d (29.272).

`avp(name, value)` builds an AVP with the right code, vendor, flags and encoding;
`value_of(avp)` decodes one by its type. Unknown AVPs decode to their raw bytes.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Any

from .codec import (
    AVP_M,
    INVALID_AVP_VALUE,
    Avp,
    DiameterDecodeError,
    LocalProtocolError,
)

VENDOR_3GPP = 10415
RELAY_APPLICATION = 0xFFFFFFFF

# base types
OCTETS, I32, I64, U32, U64, F32, F64, GROUPED = ("OctetString", "Integer32", "Integer64",
                                                 "Unsigned32", "Unsigned64", "Float32",
                                                 "Float64", "Grouped")
ADDRESS, TIME, UTF8, IDENT, URI, ENUM, IPFILTER = ("Address", "Time", "UTF8String",
                                                   "DiameterIdentity", "DiameterURI",
                                                   "Enumerated", "IPFilterRule")
TYPES = (OCTETS, I32, I64, U32, U64, F32, F64, GROUPED, ADDRESS, TIME, UTF8, IDENT, URI, ENUM,
         IPFILTER)

_NTP_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01


@dataclass(frozen=True, slots=True)
class AvpDef:
    name: str
    code: int
    type: str
    vendor: int = 0
    mandatory: bool = True


@dataclass(frozen=True, slots=True)
class CommandDef:
    name: str  # without the Request/Answer suffix, e.g. "Capabilities-Exchange"
    code: int
    short: tuple[str, str]  # ("CER", "CEA")


_BASE = [
    ("User-Name", 1, UTF8), ("Class", 25, OCTETS), ("Session-Timeout", 27, U32),
    ("Proxy-State", 33, OCTETS), ("Acct-Session-Id", 44, OCTETS),
    ("Acct-Multi-Session-Id", 50, UTF8), ("Event-Timestamp", 55, TIME),
    ("Acct-Interim-Interval", 85, U32), ("Host-IP-Address", 257, ADDRESS),
    ("Auth-Application-Id", 258, U32), ("Acct-Application-Id", 259, U32),
    ("Vendor-Specific-Application-Id", 260, GROUPED), ("Redirect-Host-Usage", 261, ENUM),
    ("Redirect-Max-Cache-Time", 262, U32), ("Session-Id", 263, UTF8),
    ("Origin-Host", 264, IDENT), ("Supported-Vendor-Id", 265, U32), ("Vendor-Id", 266, U32),
    ("Firmware-Revision", 267, U32), ("Result-Code", 268, U32), ("Product-Name", 269, UTF8),
    ("Session-Binding", 270, U32), ("Session-Server-Failover", 271, ENUM),
    ("Multi-Round-Time-Out", 272, U32), ("Disconnect-Cause", 273, ENUM),
    ("Auth-Request-Type", 274, ENUM), ("Auth-Grace-Period", 276, U32),
    ("Auth-Session-State", 277, ENUM), ("Origin-State-Id", 278, U32),
    ("Failed-AVP", 279, GROUPED), ("Proxy-Host", 280, IDENT), ("Error-Message", 281, UTF8),
    ("Route-Record", 282, IDENT), ("Destination-Realm", 283, IDENT),
    ("Proxy-Info", 284, GROUPED), ("Re-Auth-Request-Type", 285, ENUM),
    ("Accounting-Sub-Session-Id", 287, U64), ("Authorization-Lifetime", 291, U32),
    ("Redirect-Host", 292, URI), ("Destination-Host", 293, IDENT),
    ("Error-Reporting-Host", 294, IDENT), ("Termination-Cause", 295, ENUM),
    ("Origin-Realm", 296, IDENT), ("Experimental-Result", 297, GROUPED),
    ("Experimental-Result-Code", 298, U32), ("Inband-Security-Id", 299, U32),
    ("Accounting-Record-Type", 480, ENUM), ("Accounting-Realtime-Required", 483, ENUM),
    ("Accounting-Record-Number", 485, U32),
    # RFC 7155 (NASREQ), RFC 4006 (credit control), RFC 4590 (digest), RFC 5778 (Service-Selection)
    ("Framed-IP-Address", 8, OCTETS), ("Called-Station-Id", 30, UTF8),
    ("Calling-Station-Id", 31, UTF8), ("Framed-IPv6-Prefix", 97, OCTETS),
    ("Digest-Realm", 104, UTF8), ("Digest-QoP", 110, UTF8), ("Digest-Algorithm", 111, UTF8),
    ("Digest-HA1", 121, UTF8),
    ("CC-Request-Number", 415, U32), ("CC-Request-Type", 416, ENUM),
    ("Subscription-Id", 443, GROUPED), ("Subscription-Id-Data", 444, UTF8),
    ("Subscription-Id-Type", 450, ENUM), ("User-Equipment-Info", 458, GROUPED),
    ("User-Equipment-Info-Type", 459, ENUM), ("User-Equipment-Info-Value", 460, OCTETS),
    ("Service-Selection", 493, UTF8),
]

_3GPP = [
    # TS 29.061
    ("3GPP-SGSN-MCC-MNC", 18, UTF8), ("3GPP-User-Location-Info", 22, OCTETS),
    ("3GPP-MS-TimeZone", 23, OCTETS),
    # Rx, TS 29.214
    ("Abort-Cause", 500, ENUM), ("Access-Network-Charging-Address", 501, ADDRESS),
    ("Access-Network-Charging-Identifier", 502, GROUPED),
    ("Access-Network-Charging-Identifier-Value", 503, OCTETS),
    ("AF-Application-Identifier", 504, OCTETS), ("AF-Charging-Identifier", 505, OCTETS),
    ("Authorization-Token", 506, OCTETS), ("Flow-Description", 507, IPFILTER),
    ("Flow-Grouping", 508, GROUPED), ("Flow-Number", 509, U32), ("Flows", 510, GROUPED),
    ("Flow-Status", 511, ENUM), ("Flow-Usage", 512, ENUM), ("Specific-Action", 513, ENUM),
    ("Max-Requested-Bandwidth-DL", 515, U32), ("Max-Requested-Bandwidth-UL", 516, U32),
    ("Media-Component-Description", 517, GROUPED), ("Media-Component-Number", 518, U32),
    ("Media-Sub-Component", 519, GROUPED), ("Media-Type", 520, ENUM),
    ("RR-Bandwidth", 521, U32), ("RS-Bandwidth", 522, U32),
    ("SIP-Forking-Indication", 523, ENUM), ("Codec-Data", 524, OCTETS),
    ("Service-URN", 525, OCTETS), ("Acceptable-Service-Info", 526, GROUPED),
    ("Service-Info-Status", 527, ENUM), ("AF-Signalling-Protocol", 529, ENUM),
    ("Rx-Request-Type", 533, ENUM),
    # Cx/Dx, TS 29.229
    ("Visited-Network-Identifier", 600, OCTETS), ("Public-Identity", 601, UTF8),
    ("Server-Name", 602, UTF8), ("Server-Capabilities", 603, GROUPED),
    ("Mandatory-Capability", 604, U32), ("Optional-Capability", 605, U32),
    ("User-Data", 606, OCTETS), ("SIP-Number-Auth-Items", 607, U32),
    ("SIP-Authentication-Scheme", 608, UTF8), ("SIP-Authenticate", 609, OCTETS),
    ("SIP-Authorization", 610, OCTETS), ("SIP-Authentication-Context", 611, OCTETS),
    ("SIP-Auth-Data-Item", 612, GROUPED), ("SIP-Item-Number", 613, U32),
    ("Server-Assignment-Type", 614, ENUM), ("Deregistration-Reason", 615, GROUPED),
    ("Reason-Code", 616, ENUM), ("Reason-Info", 617, UTF8),
    ("Charging-Information", 618, GROUPED),
    ("Primary-Event-Charging-Function-Name", 619, URI),
    ("Secondary-Event-Charging-Function-Name", 620, URI),
    ("Primary-Charging-Collection-Function-Name", 621, URI),
    ("Secondary-Charging-Collection-Function-Name", 622, URI),
    ("User-Authorization-Type", 623, ENUM), ("User-Data-Already-Available", 624, ENUM),
    ("Confidentiality-Key", 625, OCTETS), ("Integrity-Key", 626, OCTETS),
    ("Supported-Features", 628, GROUPED), ("Feature-List-ID", 629, U32),
    ("Feature-List", 630, U32), ("Supported-Applications", 631, GROUPED),
    ("Associated-Identities", 632, GROUPED), ("Originating-Request", 633, ENUM),
    ("Wildcarded-Public-Identity", 634, UTF8), ("SIP-Digest-Authenticate", 635, GROUPED),
    ("UAR-Flags", 637, U32), ("Loose-Route-Indication", 638, ENUM),
    ("SCSCF-Restoration-Info", 639, GROUPED), ("Path", 640, OCTETS), ("Contact", 641, OCTETS),
    ("Subscription-Info", 642, GROUPED), ("Call-ID-SIP-Header", 643, OCTETS),
    ("From-SIP-Header", 644, OCTETS), ("To-SIP-Header", 645, OCTETS),
    ("Record-Route", 646, OCTETS), ("Associated-Registered-Identities", 647, GROUPED),
    ("Multiple-Registration-Indication", 648, ENUM), ("Restoration-Info", 649, GROUPED),
    ("Session-Priority", 650, ENUM), ("Identity-with-Emergency-Registration", 651, GROUPED),
    ("Priviledged-Sender-Indication", 652, ENUM), ("LIA-Flags", 653, U32),
    ("SAR-Flags", 655, U32),
    # Sh, TS 29.329
    ("User-Identity", 700, GROUPED), ("MSISDN", 701, OCTETS),
    ("Data-Reference", 703, ENUM), ("Service-Indication", 704, OCTETS),
    # Gx, TS 29.212
    ("Charging-Rule-Install", 1001, GROUPED), ("Charging-Rule-Remove", 1002, GROUPED),
    ("Charging-Rule-Definition", 1003, GROUPED), ("Charging-Rule-Base-Name", 1004, UTF8),
    ("Charging-Rule-Name", 1005, OCTETS), ("Event-Trigger", 1006, ENUM),
    ("Metering-Method", 1007, ENUM), ("Offline", 1008, ENUM), ("Online", 1009, ENUM),
    ("Precedence", 1010, U32), ("Reporting-Level", 1011, ENUM),
    ("TFT-Filter", 1012, IPFILTER), ("TFT-Packet-Filter-Information", 1013, GROUPED),
    ("ToS-Traffic-Class", 1014, OCTETS), ("QoS-Information", 1016, GROUPED),
    ("Charging-Rule-Report", 1018, GROUPED), ("PCC-Rule-Status", 1019, ENUM),
    ("Bearer-Identifier", 1020, OCTETS), ("Bearer-Operation", 1021, ENUM),
    ("Bearer-Control-Mode", 1023, ENUM), ("Network-Request-Support", 1024, ENUM),
    ("Guaranteed-Bitrate-DL", 1025, U32), ("Guaranteed-Bitrate-UL", 1026, U32),
    ("IP-CAN-Type", 1027, ENUM), ("QoS-Class-Identifier", 1028, ENUM),
    ("Rule-Failure-Code", 1031, ENUM), ("RAT-Type", 1032, ENUM),
    ("Allocation-Retention-Priority", 1034, GROUPED),
    ("APN-Aggregate-Max-Bitrate-DL", 1040, U32), ("APN-Aggregate-Max-Bitrate-UL", 1041, U32),
    ("Priority-Level", 1046, U32), ("Pre-emption-Capability", 1047, ENUM),
    ("Pre-emption-Vulnerability", 1048, ENUM), ("Default-EPS-Bearer-QoS", 1049, GROUPED),
    ("Flow-Information", 1058, GROUPED), ("Packet-Filter-Content", 1059, IPFILTER),
    ("Packet-Filter-Identifier", 1060, OCTETS), ("Monitoring-Key", 1066, OCTETS),
    ("Usage-Monitoring-Information", 1067, GROUPED),
    # S6a/S6d, TS 29.272
    ("Subscription-Data", 1400, GROUPED), ("Terminal-Information", 1401, GROUPED),
    ("IMEI", 1402, UTF8), ("Software-Version", 1403, UTF8), ("QoS-Subscribed", 1404, OCTETS),
    ("ULR-Flags", 1405, U32), ("ULA-Flags", 1406, U32), ("Visited-PLMN-Id", 1407, OCTETS),
    ("Requested-EUTRAN-Authentication-Info", 1408, GROUPED),
    ("Requested-UTRAN-GERAN-Authentication-Info", 1409, GROUPED),
    ("Number-Of-Requested-Vectors", 1410, U32), ("Re-Synchronization-Info", 1411, OCTETS),
    ("Immediate-Response-Preferred", 1412, U32), ("Authentication-Info", 1413, GROUPED),
    ("E-UTRAN-Vector", 1414, GROUPED), ("UTRAN-Vector", 1415, GROUPED),
    ("GERAN-Vector", 1416, GROUPED), ("Network-Access-Mode", 1417, ENUM),
    ("HPLMN-ODB", 1418, U32), ("Item-Number", 1419, U32), ("Cancellation-Type", 1420, ENUM),
    ("DSR-Flags", 1421, U32), ("DSA-Flags", 1422, U32), ("Context-Identifier", 1423, U32),
    ("Subscriber-Status", 1424, ENUM), ("Operator-Determined-Barring", 1425, U32),
    ("Access-Restriction-Data", 1426, U32), ("APN-OI-Replacement", 1427, UTF8),
    ("All-APN-Configurations-Included-Indicator", 1428, ENUM),
    ("APN-Configuration-Profile", 1429, GROUPED), ("APN-Configuration", 1430, GROUPED),
    ("EPS-Subscribed-QoS-Profile", 1431, GROUPED),
    ("VPLMN-Dynamic-Address-Allowed", 1432, ENUM), ("STN-SR", 1433, OCTETS),
    ("Alert-Reason", 1434, ENUM), ("AMBR", 1435, GROUPED),
    ("RAT-Frequency-Selection-Priority-ID", 1440, U32), ("RAND", 1447, OCTETS),
    ("XRES", 1448, OCTETS), ("AUTN", 1449, OCTETS), ("KASME", 1450, OCTETS),
    ("PDN-Type", 1456, ENUM), ("Trace-Data", 1458, GROUPED),
    ("Regional-Subscription-Zone-Code", 1446, OCTETS), ("UE-SRVCC-Capability", 1615, ENUM),
]

COMMANDS = [
    CommandDef("Capabilities-Exchange", 257, ("CER", "CEA")),
    CommandDef("Re-Auth", 258, ("RAR", "RAA")),
    CommandDef("Accounting", 271, ("ACR", "ACA")),
    CommandDef("Credit-Control", 272, ("CCR", "CCA")),
    CommandDef("Abort-Session", 274, ("ASR", "ASA")),
    CommandDef("Session-Termination", 275, ("STR", "STA")),
    CommandDef("Device-Watchdog", 280, ("DWR", "DWA")),
    CommandDef("Disconnect-Peer", 282, ("DPR", "DPA")),
    CommandDef("AA", 265, ("AAR", "AAA")),
    CommandDef("User-Authorization", 300, ("UAR", "UAA")),
    CommandDef("Server-Assignment", 301, ("SAR", "SAA")),
    CommandDef("Location-Info", 302, ("LIR", "LIA")),
    CommandDef("Multimedia-Auth", 303, ("MAR", "MAA")),
    CommandDef("Registration-Termination", 304, ("RTR", "RTA")),
    CommandDef("Push-Profile", 305, ("PPR", "PPA")),
    CommandDef("User-Data", 306, ("UDR", "UDA")),
    CommandDef("Update-Location", 316, ("ULR", "ULA")),
    CommandDef("Cancel-Location", 317, ("CLR", "CLA")),
    CommandDef("Authentication-Information", 318, ("AIR", "AIA")),
    CommandDef("Insert-Subscriber-Data", 319, ("IDR", "IDA")),
    CommandDef("Delete-Subscriber-Data", 320, ("DSR", "DSA")),
    CommandDef("Purge-UE", 321, ("PUR", "PUA")),
    CommandDef("Reset", 322, ("RSR", "RSA")),
    CommandDef("Notify", 323, ("NOR", "NOA")),
]

# application ids (RFC 6733 11.3, 3GPP TS 29.230)
APPLICATIONS = {"base": 0, "nasreq": 1, "accounting": 3, "credit-control": 4,
                "cx": 16777216, "sh": 16777217, "rx": 16777236, "gx": 16777238,
                "s6a": 16777251, "relay": RELAY_APPLICATION}

AVPS: dict[str, AvpDef] = {}
BY_CODE: dict[tuple[int, int], AvpDef] = {}
# base AVPs whose M bit must not be set (RFC 6733 4.5: Firmware-Revision, Product-Name,
# Error-Message, Error-Reporting-Host)
_NOT_MANDATORY_BASE = {267, 269, 281, 294}
for _name, _code, _type in _BASE:
    AVPS[_name] = BY_CODE[(_code, 0)] = AvpDef(_name, _code, _type, 0,
                                              _code not in _NOT_MANDATORY_BASE)
# 3GPP AVPs whose M bit must not be set: TS 29.229 table 6.3.1 (Supported-Features may have it,
# the later Cx additions must not); TS 29.214 table 5.3.1 (AF-Signalling-Protocol,
# Rx-Request-Type); TS 29.212 table 5.3.1 (RAT-Type, the EPS QoS AVPs, Flow-Information and
# the packet filter AVPs, usage monitoring); TS 29.272 table 7.3.1 (UE-SRVCC-Capability).
# Cross-checked against freeDiameter's dictionary (tests/integration/test_diameter_real_clients.py).
_NOT_MANDATORY_3GPP = {628, 629, 630, 631, 632, 634, 635, *range(637, 656), 529, 533, 1032,
                       1034, 1040, 1041, 1046, 1047, 1048, 1049, 1058, 1059, 1060, 1066, 1067,
                       1615}
for _name, _code, _type in _3GPP:
    AVPS[_name] = BY_CODE[(_code, VENDOR_3GPP)] = AvpDef(
        _name, _code, _type, VENDOR_3GPP, _code not in _NOT_MANDATORY_3GPP)
_LOWER = {k.lower(): v for k, v in AVPS.items()}
CMD_BY_CODE = {c.code: c for c in COMMANDS}
CMD_BY_SHORT = {s.upper(): (c, i == 0) for c in COMMANDS for i, s in enumerate(c.short)}


def lookup(name: str) -> AvpDef:
    d = AVPS.get(name) or _LOWER.get(name.lower())
    if d is None:
        raise KeyError(f"unknown AVP {name!r}")
    return d


def command_name(code: int, request: bool) -> str:
    c = CMD_BY_CODE.get(code)
    if c is None:
        return f"{code}{'R' if request else 'A'}"
    return c.short[0 if request else 1]


def command_code(name: str | int) -> int:
    """`"UAR"`, `"Multimedia-Auth"` or a number -> the command code."""
    if isinstance(name, int):
        return name
    if name.isdigit():
        return int(name)
    hit = CMD_BY_SHORT.get(name.upper())
    if hit:
        return hit[0].code
    for c in COMMANDS:
        if c.name.lower() == name.lower():
            return c.code
    raise KeyError(f"unknown command {name!r}")


def application_id(name: str | int) -> int:
    if isinstance(name, int):
        return name
    if name.isdigit():
        return int(name)
    try:
        return APPLICATIONS[name.lower()]
    except KeyError:
        raise KeyError(f"unknown application {name!r} (one of {', '.join(APPLICATIONS)} "
                       "or a number)") from None


# ---------------------------------------------------------------- value encoding


def encode_value(typ: str, value: Any) -> bytes:
    try:
        if typ in (OCTETS,):
            return value.encode() if isinstance(value, str) else bytes(value)
        if typ in (UTF8, IDENT, URI, IPFILTER):
            return value.encode("utf-8") if isinstance(value, str) else bytes(value)
        if typ == U32:
            return struct.pack("!I", value)
        if typ in (ENUM, I32):
            return struct.pack("!i", value)
        if typ == U64:
            return struct.pack("!Q", value)
        if typ == I64:
            return struct.pack("!q", value)
        if typ == F32:
            return struct.pack("!f", value)
        if typ == F64:
            return struct.pack("!d", value)
        if typ == TIME:
            return struct.pack("!I", (int(value) + _NTP_OFFSET) & 0xFFFFFFFF)
        if typ == ADDRESS:
            ip = ipaddress.ip_address(value)
            return struct.pack("!H", 1 if ip.version == 4 else 2) + ip.packed
    except (struct.error, TypeError, ValueError) as exc:
        raise LocalProtocolError(f"cannot encode {value!r} as {typ}: {exc}") from None
    raise LocalProtocolError(f"cannot encode a {typ} value directly")


def decode_value(typ: str, data: bytes) -> Any:
    """Raises DiameterDecodeError (5004) for a value of the wrong size or form."""
    try:
        if typ == OCTETS:
            return data
        if typ in (UTF8, IDENT, URI, IPFILTER):
            return data.decode("utf-8")
        if typ == U32:
            return struct.unpack("!I", data)[0]
        if typ in (I32, ENUM):
            return struct.unpack("!i", data)[0]
        if typ == U64:
            return struct.unpack("!Q", data)[0]
        if typ == I64:
            return struct.unpack("!q", data)[0]
        if typ == F32:
            return struct.unpack("!f", data)[0]
        if typ == F64:
            return struct.unpack("!d", data)[0]
        if typ == TIME:
            return struct.unpack("!I", data)[0] - _NTP_OFFSET
        if typ == ADDRESS:
            family = struct.unpack("!H", data[:2])[0]
            if family == 1 and len(data) == 6 or family == 2 and len(data) == 18:
                return str(ipaddress.ip_address(data[2:]))
            raise ValueError(f"address family {family} with {len(data) - 2} bytes")
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise DiameterDecodeError(f"bad {typ} value: {exc}", INVALID_AVP_VALUE) from None
    return data


def avp(name: str, value: Any = None, *, mandatory: bool | None = None) -> Avp:
    """Build an AVP by dictionary name. Grouped AVPs take a list of Avp (or of
    (name, value) pairs)."""
    d = lookup(name)
    flags = AVP_M if (d.mandatory if mandatory is None else mandatory) else 0
    if d.type == GROUPED:
        children = [c if isinstance(c, Avp) else avp(*c) for c in (value or [])]
        return Avp(d.code, b"", flags, d.vendor, children)
    return Avp(d.code, encode_value(d.type, value), flags, d.vendor)


def definition(a: Avp) -> AvpDef | None:
    return BY_CODE.get((a.code, a.vendor))


def value_of(a: Avp) -> Any:
    """The decoded value (grouped: the list of inner AVPs; unknown: the raw bytes)."""
    d = BY_CODE.get((a.code, a.vendor))
    if d is None:
        return a.data
    if d.type == GROUPED:
        return a.group()
    return decode_value(d.type, a.data)


def get(avps: list[Avp], name: str, default: Any = None) -> Any:
    d = lookup(name)
    for a in avps:
        if a.code == d.code and a.vendor == d.vendor:
            return value_of(a)
    return default


def get_all(avps: list[Avp], name: str) -> list[Any]:
    d = lookup(name)
    return [value_of(a) for a in avps if a.code == d.code and a.vendor == d.vendor]


def to_json(a: Avp) -> dict:
    """A JSON-friendly view of an AVP (for RPC, logs and scripts)."""
    d = definition(a)
    out: dict[str, Any] = {"name": d.name if d else None, "code": a.code}
    if a.vendor:
        out["vendor"] = a.vendor
    try:
        v = value_of(a)
    except DiameterDecodeError:
        v = a.data
    if d is not None and d.type == GROUPED:
        out["avps"] = [to_json(c) for c in v]
    elif isinstance(v, bytes):
        out["hex"] = v.hex()
    else:
        out["value"] = v
    return out
