"""I-CSCF of the IMS trio (examples/ims_trio/sipedge.toml): the entry of the home network.

A real I-CSCF asks the HSS (Diameter Cx UAR/LIR) which S-CSCF serves the user; this one has
a single S-CSCF and passes every initial request there. It does not record-route, so
in-dialog requests go past it.
"""

SCSCF = "sip:127.0.0.13:5060"


def request_route(msg):
    if msg.in_dialog or msg.loose_routed:
        return msg.t_relay()
    if msg.method == "ACK":
        return msg.drop("stray ACK")
    return msg.t_relay(SCSCF)
