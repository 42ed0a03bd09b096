"""Registrar + proxy for our own domains (the routing script of the embedded default).

Needs `[core] modules = ["security", "registrar", "auth"]`. The worker has already screened
every request with the security module (ACLs, scanners, flood, failed logins) before this
route runs.

- REGISTER for our domain: digest auth (401), then the bindings are saved.
- Requests inside a dialog follow the Route set Record-Route gave them.
- Contacts of requests and replies from UAs behind NAT are rewritten to the address they
  came from (REGISTER keeps its Contact: the registrar stores the received address).
- Other requests from or to our domains: the caller authenticates (407), then the callee's
  registered contacts are looked up (404 unknown user, 480 not registered) and the request
  is relayed statefully, forking in parallel when the callee has several contacts.
"""

from sipedge.script import ksr


async def request_route(msg):
    if msg.method != "REGISTER" and msg.nat_detected():
        msg.fix_nated_contact()  # in-dialog requests must find a UA behind NAT
    if msg.in_dialog:
        if msg.loose_routed or not msg.is_myself():
            return msg.t_relay()  # BYE, re-INVITE, 2xx ACK: along the Route set
        if msg.method == "ACK":
            return msg.drop("ACK without a transaction")
        return msg.reply(404, "Not Here")
    if msg.method == "CANCEL":
        return msg.t_relay()  # no INVITE transaction matched it: forwarded statelessly
    if msg.method == "ACK":
        return msg.drop("stray ACK")
    if msg.method == "REGISTER":
        if not msg.is_myself():
            return msg.reply(403, "Domain Not Served")
        out = await ksr.auth.check(msg)
        if not out.ok:
            return msg.t_reply(*out.reply)
        ksr.auth.consume_credentials(msg)
        return msg.t_reply(*await ksr.registrar.save(msg, auth_user=out.verdict.username))
    if ksr.auth.needs_auth(msg):
        out = await ksr.auth.check(msg)
        if not out.ok:
            return msg.t_reply(*out.reply)
        ksr.auth.consume_credentials(msg)
    if not msg.is_myself():
        return msg.reply(403, "Relaying Denied")
    reply = await ksr.registrar.lookup(msg)
    if reply is not None:
        return msg.t_reply(*reply)
    return msg.t_relay()


def reply_route(msg):
    if msg.nat_detected():
        msg.fix_nated_contact()  # the caller's ACK/BYE must reach a callee behind NAT
