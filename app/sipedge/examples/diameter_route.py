"""Example routing script for a box with `[core] modules = ["diameter"]` (one worker).

Relay agent: every request the DRA forwards gets a Session-Priority AVP (3GPP TS 29.229) when
it has none, and requests from a peer called `blocked.example` are refused with 3002.

SIP: a REGISTER asks the HSS realm with a Cx User-Authorization-Request and answers with the
Diameter result in the reason phrase; anything else gets 404.
"""

from sipedge.script import ksr

HSS_REALM = "hss.ims.test"


def diameter_relay_route(req):
    """Called for every request the relay agent forwards (before routing)."""
    if req.from_peer == "blocked.example":
        req.reject(3002)
        return
    if req.get("Session-Priority") is None:
        req.add_avp("Session-Priority", 0)


async def request_route(msg):
    if msg.method != "REGISTER":
        msg.reply(404, "Not here")
        return
    user = f"{msg.to_user}@{msg.to_host}"
    try:
        ans = await ksr.diameter.request(
            "cx", "UAR", [("User-Name", user), ("Public-Identity", f"sip:{user}"),
                          ("Visited-Network-Identifier", msg.to_host.encode()),
                          ("Auth-Session-State", 1)],
            dest_realm=HSS_REALM, timeout=3)
    except ksr.diameter.DiameterError as exc:
        msg.reply(503, f"Diameter {exc.result_code}")  # exc.reason says why
        return
    msg.reply(200 if ans.result_code == 2001 else 403,
              f"Diameter {ans.result_code} from {ans.get('Origin-Host')}")
