"""P-CSCF of the IMS trio (examples/ims_trio/sipedge.toml): the UE's first hop.

- REGISTER goes to the home network (R-URI `sip:HOME_DOMAIN`) through the I-CSCF, with a
  Path of ours (RFC 3327), so that requests for the UE come back through this P-CSCF.
- Other initial requests from the UE (originating) are record-routed and go to the I-CSCF.
- Requests that carry our Path or Record-Route entry (terminating requests from the S-CSCF,
  in-dialog requests) go on to the R-URI, record-routed when they start a dialog.
"""

ICSCF = "sip:127.0.0.12:5060"
HOME_DOMAIN = "localhost"


def request_route(msg):
    if msg.loose_routed:
        if not msg.in_dialog:
            msg.record_route()  # terminating side: stay in the dialog towards the UE
        return msg.t_relay()
    if msg.in_dialog:
        if not msg.is_myself():
            return msg.t_relay()
        if msg.method == "ACK":
            return msg.drop("ACK without a route")
        return msg.reply(404, "Not Here")
    if msg.method == "CANCEL":
        return msg.t_relay()
    if msg.method == "ACK":
        return msg.drop("stray ACK")
    if msg.method == "REGISTER":
        _proto, host_port = msg.listener.split(":", 1)
        msg.set_ruri(f"sip:{HOME_DOMAIN}")
        msg.append_hf("Path", f"<sip:term@{host_port};lr>")
        return msg.t_relay(ICSCF)
    msg.record_route()  # originating side
    return msg.t_relay(ICSCF)
