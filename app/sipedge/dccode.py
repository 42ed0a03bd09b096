"""The byte code of the methods `@dataclass` writes, compiled when the image is built.

For every class, `dataclasses` writes `__init__`, `__repr__`, `__eq__`, `__hash__` and, for
frozen classes, `__setattr__`/`__delattr__` as source text and compiles it with `exec()`
when the class statement runs. The proxy's start defines about 85 such classes (the config
sections of every module, the SIP core's records): about 490 compilations, 45 % of the CPU
of its imports and config load on the host and about a second under emulation (issue 13).

The offline image's build (tools/image/readahead.py) runs the proxy's imports with the
image's own interpreter, `record()` collecting those texts, and `save()` stores their code
objects (marshal, keyed by a 128-bit BLAKE2b digest of the text, so that the table costs
the proxy about 50 KiB instead of 0.4 MiB; with the interpreter's version) in `CODE_FILE`.
At start `use()` gives `dataclasses` an `exec` that runs the stored code of a text it knows and compiles any other
one as before (a different class, another interpreter, no file: the plain path). The
compilation is the one `exec` does for a text (file name `<string>`, no inherited future
flags), so the methods are the same. Only the proxy uses it (`cli.main`): the table's code
objects stay in memory, and the supervisor, which defines few of those classes, would keep
about 0.7 MiB of them. Standard library only, cheap to import.
"""
from __future__ import annotations

import builtins
import marshal
import sys
from hashlib import blake2b

CODE_FILE = "/usr/share/sipedge/dataclass-code.marshal"
_VERSION_KEY = "sipedge.dccode version"


def use(path: str = CODE_FILE) -> bool:
    """Make `dataclasses` take compiled methods from `path`. False (nothing changed) when the
    file is missing, unreadable or written by another interpreter version."""
    try:
        with open(path, "rb") as fh:
            table = marshal.load(fh)
    except (OSError, EOFError, ValueError, TypeError):
        return False
    if not isinstance(table, dict) or table.get(_VERSION_KEY) != sys.version:
        return False
    import dataclasses

    def exec_stored(source, globals=None, locals=None, /):
        code = table.get(_key(source)) if isinstance(source, str) else None
        return builtins.exec(source if code is None else code, globals, locals)

    dataclasses.exec = exec_stored
    return True


def record() -> list[str]:
    """Collect, from now on, the texts `dataclasses` compiles (build time); the list fills."""
    import dataclasses

    texts: list[str] = []

    def exec_recording(source, globals=None, locals=None, /):
        if isinstance(source, str):
            texts.append(source)
        return builtins.exec(source, globals, locals)

    dataclasses.exec = exec_recording
    return texts


def save(texts: list[str], path: str = CODE_FILE) -> int:
    """Compile `texts` as `exec` would and store them for `use()`; the number stored."""
    table: dict[object, object] = {_key(t): compile(t, "<string>", "exec", dont_inherit=True)
                                   for t in texts}
    n = len(table)
    table[_VERSION_KEY] = sys.version
    with open(path, "wb") as fh:
        marshal.dump(table, fh)
    return n


def _key(text: str) -> bytes:
    return blake2b(text.encode(), digest_size=16).digest()
