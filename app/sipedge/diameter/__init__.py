"""Diameter (RFC 6733) sans-IO core: the message codec (`codec`), the AVP dictionary
(`dictionary`) and the peer state machine (`peer`). No sockets, no clock: bytes and `now` in,
messages, actions and the next timer out. The routing/relay logic and the asyncio adapter
live in `sipedge.modules.diameter`.
"""
