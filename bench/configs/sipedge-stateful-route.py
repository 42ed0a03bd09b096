# sipedge bench: stateful routing script (rendered as route.py next to sipedge.toml).
NEXT_HOP = "sip:@NEXT_HOST@:@NEXT_PORT@"


def request_route(msg):
    if msg.in_dialog or msg.method in ("ACK", "CANCEL"):
        msg.t_relay()  # ACK and unmatched CANCEL go statelessly, BYE statefully
        return
    msg.t_relay(NEXT_HOP)
