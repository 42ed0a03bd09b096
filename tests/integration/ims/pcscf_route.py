"""P-CSCF routing script for the kernel tests (docs/ims.md walks through it).

UE side: listener 10.99.0.1:5060 (and the protected ports the module opens); core side:
127.0.0.1:5060 towards the S-CSCF at 127.0.0.1:5070."""

import os

SCSCF = "sip:127.0.0.1:5070"
CORE_SOCKET = os.environ.get("PCSCF_CORE_SOCKET", "udp:127.0.0.1:5060")


def request_route(msg):
    if msg.src_ip == "127.0.0.1":  # from the core: a terminating request to a UE
        if ksr.ims_pcscf.route_to_ue(msg):  # noqa: F821 - from our protected client port
            return msg.t_relay()
        return msg.reply(404, "Not Registered Here")
    reply = ksr.ims_pcscf.on_request(msg)  # noqa: F821 - sec-agree checks, header clean-up
    if reply is not None:
        return msg.reply(*reply)
    msg.force_send_socket(CORE_SOCKET)
    msg.t_on_reply("from_core")
    return msg.t_relay(SCSCF)


def from_core(reply):
    ksr.ims_pcscf.on_reply(reply)  # noqa: F821 - 401: ck/ik out, SAs in; 200: set active
