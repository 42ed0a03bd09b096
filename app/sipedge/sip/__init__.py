"""Sans-IO SIP: message model and parser, URIs, header values, stateless proxy rules."""

from .message import Message, Request, Response, parse_message
from .uri import URI, parse_uri

__all__ = ["Message", "Request", "Response", "parse_message", "URI", "parse_uri"]
