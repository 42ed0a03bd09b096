"""Edge towards a carrier that authenticates the box, with an emergency-call notice.

Needs `[core] modules = ["uac"]` and a `[[uac.trunk]]` with the carrier's realm and the
box's credentials (see app/sipedge/modules/uac/README.md).

- Every INVITE goes to the carrier (UPSTREAM); its 401/407 is answered in the failure
  route with the trunk's credentials (ksr.uac.auth) and the INVITE relayed again.
- A call to an emergency number (EMERGENCY) is routed like any other call AND a SIP
  MESSAGE naming the caller, the number and the time goes to the operator's phone
  (OPERATOR_URI), through the carrier too (its challenge answered on the way). The reply
  to the MESSAGE arrives in `uac_reply` (this route is synchronous).
- Requests inside a dialog follow their Route set; their CSeq is fixed up by the uac module
  when the INVITE was authenticated (the caller never sees the CSeq the carrier saw).
- Calls from the carrier to our registered contact (a `[[uac.registration]]`) go to the
  local gateway (LOCAL_GATEWAY).
"""

from datetime import datetime, timezone

from sipedge.script import ksr

UPSTREAM = "sip:127.0.0.1:5070"  # the carrier's proxy
OPERATOR_URI = "sip:operator@127.0.0.1:5090"  # who is told about emergency calls
OPERATOR_FROM = "sip:emergency-notice@sipedge.invalid"
LOCAL_GATEWAY = "127.0.0.1:5080"  # the PBX / phones behind the box
TRUNK = "carrier"  # the [[uac.trunk]] whose credentials answer the carrier's challenges
EMERGENCY = {"000", "110", "112", "911", "999", "116000", "116111", "116117"}


def request_route(msg):
    if msg.in_dialog or msg.method in ("ACK", "CANCEL"):
        msg.t_relay()  # along the Route set; an unmatched CANCEL statelessly
        return
    registration = ksr.uac.reg_lookup(msg)
    if registration is not None:
        msg.log.info("inbound call for registration %s", registration)
        host, _, port = LOCAL_GATEWAY.partition(":")
        msg.set_ruri_host(host)
        msg.set_ruri_port(int(port) if port else None)
        msg.t_relay()
        return
    if msg.method != "INVITE":
        msg.reply(405, "Method Not Allowed")
        return
    if msg.ruri_user in EMERGENCY:
        notify_operator(msg)
    host, _, port = LOCAL_GATEWAY.partition(":")
    msg.set_ruri_host(host)  # the carrier routes on to the R-URI
    msg.set_ruri_port(int(port) if port else None)
    msg.t_on_failure("carrier_auth")
    msg.t_relay(UPSTREAM)


def carrier_auth(msg):
    if msg.t_check_status("401|407") and ksr.uac.auth(msg):
        msg.t_on_failure("carrier_auth")  # a stale nonce may be challenged once more
        msg.t_relay(UPSTREAM)


def notify_operator(msg):
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    text = (f"Emergency call to {msg.ruri_user} from {msg.from_user or '-'} "
            f"({msg.from_uri}) at {now}, Call-ID {msg.call_id}")
    ksr.uac.send_request("MESSAGE", OPERATOR_URI, OPERATOR_FROM, OPERATOR_URI,
                         headers={"Content-Type": "text/plain"}, body=text,
                         outbound_proxy=UPSTREAM, auth=TRUNK)
    msg.log.warning("emergency call to %s from %s: operator notified", msg.ruri_user,
                    msg.from_uri)


def uac_reply(reply):
    """Event route: the final reply to the MESSAGE sent above."""
    import logging

    logging.getLogger("sipedge.script").info("operator notified: %d %s", reply.status,
                                             reply.reason)
