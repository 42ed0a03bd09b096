"""Structured header values, one module per header kind (parsed lazily by Message)."""

from .address import Address, parse_address
from .cseq import CSeq, parse_cseq
from .via import Via, parse_via

__all__ = ["Address", "parse_address", "CSeq", "parse_cseq", "Via", "parse_via"]
