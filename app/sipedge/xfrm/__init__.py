"""XFRM plan (sans-IO): which transport-mode ESP SAs and policies should exist.

`model` holds the value types the kernel adapter (`sipedge.io.xfrm`) applies; nothing here
talks to the kernel.
"""
