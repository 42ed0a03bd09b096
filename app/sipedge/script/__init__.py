"""Routing scripts: the API scripts use, and the loader with hot reload."""

from .api import Drop, Forward, Reply, ReplyMsg, RequestMsg, RouteTable
from .ksr import ksr
from .loader import Script, load_script

__all__ = ["Drop", "Forward", "Reply", "ReplyMsg", "RequestMsg", "RouteTable", "Script",
           "ksr", "load_script"]
