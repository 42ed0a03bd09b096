"""Example routing script (the typical first script of a Kamailio user).

REGISTER is answered "200 Sure"; INVITE gets an X- header and goes to a chosen next hop
(its ACK and CANCEL follow it there); requests inside a dialog follow their Route set;
anything else is answered "500 Got no idea".
"""

NEXT_HOP_HOST = "127.0.0.1"
NEXT_HOP_PORT = 5080


def request_route(msg):
    if msg.in_dialog and (msg.loose_routed or not msg.is_myself()):
        # BYE, re-INVITE, ACK of a 2xx...: Record-Route brought them here; they go on
        # along their Route set, or to the remote target in the Request-URI.
        msg.forward()
        return
    if msg.method == "REGISTER":
        msg.reply(200, "Sure")
    elif msg.is_method("INVITE|ACK|CANCEL"):
        if msg.method == "INVITE":
            msg.append_hf("X-Edge-Proxy", "sipedge")
            msg.log.info("INVITE from %s to %s", msg.from_user, msg.ruri)
        msg.set_ruri_host(NEXT_HOP_HOST)
        msg.set_ruri_port(NEXT_HOP_PORT)
        msg.forward()
    else:
        msg.reply(500, "Got no idea")


def reply_route(msg):
    msg.append_hf("X-Proxied: For the reply")
