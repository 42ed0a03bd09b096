"""S-CSCF of the IMS trio (examples/ims_trio/sipedge.toml): registrar and authentication.

Needs `[core] modules = ["registrar", "auth"]`. REGISTER: digest challenge (401), then the
binding is saved with the P-CSCF's Path. Other initial requests: the caller authenticates
(407), the callee's contacts are looked up (404 unknown, 480 not registered) and the request
is relayed along the stored Path, record-routed.
"""

from sipedge.script import ksr


async def request_route(msg):
    if msg.in_dialog:
        if msg.loose_routed or not msg.is_myself():
            return msg.t_relay()
        if msg.method == "ACK":
            return msg.drop("ACK without a transaction")
        return msg.reply(404, "Not Here")
    if msg.method == "CANCEL":
        return msg.t_relay()
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
    msg.record_route()
    return msg.t_relay()
