# sipedge bench: dispatcher routing script (rendered as route.py next to sipedge.toml).
# Initial INVITEs: select a destination of set 1 with @ALG@ (sets the destination URI),
# then relay statefully; in-dialog requests follow the Route set.
ALG = "@ALG@"


def request_route(msg):
    if msg.in_dialog or msg.method in ("ACK", "CANCEL"):
        msg.t_relay()  # ACK and unmatched CANCEL go statelessly, BYE statefully
        return
    if not ksr.dispatcher.select(msg, 1, ALG):  # noqa: F821 - ksr is injected by the worker
        msg.reply(503, "No Destination Available")
        return
    msg.t_relay()
