"""Stand-in for the `cython` module when Cython is not installed (the pure-Python runtime).

Modules of the compiled build (sipedge/compiled.py) type their hot loops in Cython's
pure-Python mode: `import cython` and its decorators, read by Cython at compile time. A
compiled module never imports this file (there `import cython` cannot fail); as plain Python
the decorators do nothing and `cython.compiled` is False, so the `if cython.compiled:`
branches (C loops over bytes, slow as Python) are not taken. With Cython installed, plain
Python gets Cython's own stand-in (Cython.Shadow) instead, which behaves the same.

Only what sipedge uses is here.
"""

from __future__ import annotations

compiled = False

# C type names: only read by Cython; any value will do in Python
bint = char = uchar = int = uint = long = Py_ssize_t = p_char = p_uchar = object  # noqa: A001


def _same(f):
    return f


cfunc = ccall = inline = _same


def locals(**_types):  # noqa: A001 - Cython's name
    return _same


def returns(_type):
    return _same


def exceptval(*_args, **_kwargs):
    return _same


def cast(_type, value):
    return value


def declare(_type, value=None):
    return value
