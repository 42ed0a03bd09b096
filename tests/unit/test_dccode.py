"""sipedge/dccode.py: dataclass methods compiled once (image build), loaded at start (issue 13).

Each case runs in a fresh interpreter: `use()` and `record()` replace `dataclasses.exec`
for the whole process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"

CLASSES = """
from dataclasses import dataclass, field

@dataclass(frozen=True)
class Point:
    x: int
    y: int = 2
    tags: tuple = field(default_factory=tuple)

@dataclass
class Box:
    name: str
    size: float = 1.0
"""


def run(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(APP)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout


def record_to(path: Path) -> int:
    return int(run("from sipedge import dccode\ntexts = dccode.record()\n" + CLASSES
                   + f"\nprint(dccode.save(texts, {str(path)!r}))"))


CHECK = CLASSES + """
import dataclasses
p = Point(1)
assert p == Point(1, 2, ()) and hash(p) == hash(Point(1, 2, ())) and p != Point(2)
assert repr(p) == "Point(x=1, y=2, tags=())", repr(p)
try:
    p.x = 3
except dataclasses.FrozenInstanceError:
    pass
else:
    raise AssertionError("frozen")
b = Box("a")
b.size = 2.5
assert b == Box("a", 2.5) and repr(b) == "Box(name='a', size=2.5)"
print(Point.__init__.__code__.co_filename, Point.__init__.__code__.co_varnames[:4])
"""


def test_recorded_methods_behave_as_compiled_ones(tmp_path):
    table = tmp_path / "dc.marshal"
    assert record_to(table) == 9  # init, repr, eq, setattr, delattr, hash; init, repr, eq
    stored = run(f"from sipedge import dccode\nassert dccode.use({str(table)!r})\n" + CHECK)
    plain = run(CHECK)
    assert stored == plain == "<string> ('self', 'x', 'y', 'tags')\n"


def test_stored_code_is_what_runs(tmp_path):
    """use() runs the stored code objects: a recorded class compiles nothing (a text would
    reach builtins.exec as a str); another class's methods are compiled as before."""
    table = tmp_path / "dc.marshal"
    record_to(table)
    out = run(f"""
import builtins
from sipedge import dccode
assert dccode.use({str(table)!r})
strings = []
real_exec = builtins.exec
def counting(source, *a):
    if isinstance(source, str):
        strings.append(source)
    return real_exec(source, *a)
builtins.exec = counting
{CLASSES}
print(len(strings))
@dataclass
class Other:  # not recorded: compiled as before
    z: int = 0
print(len(strings), Other(3))
""")
    assert out == "0\n3 Other(z=3)\n"


def test_no_file_or_other_interpreter_changes_nothing(tmp_path):
    table = tmp_path / "dc.marshal"
    record_to(table)
    out = run(f"""
import dataclasses, marshal, sys
from sipedge import dccode
assert not dccode.use({str(tmp_path / "missing")!r})
t = marshal.load(open({str(table)!r}, "rb"))
t["sipedge.dccode version"] = "2.7.18"
marshal.dump(t, open({str(tmp_path / "old")!r}, "wb"))
assert not dccode.use({str(tmp_path / "old")!r})
open({str(tmp_path / "junk")!r}, "wb").write(b"not marshal")
assert not dccode.use({str(tmp_path / "junk")!r})
print("exec" in vars(dataclasses))
""" + CLASSES)
    assert out == "False\n"
