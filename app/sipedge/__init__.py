"""sipedge: a SIP edge proxy for single-board computers."""

__version__ = "0.1.0"
