"""tools/provision on the host: render, validation errors, secrets, diff, image, card, push.

The tool runs as a subprocess (`tools/provision/provision`), as an operator runs it. Images are
small stand-ins built here (sfdisk + mkfs.vfat, MBR and GPT) and checked with mtools; `push`
talks to a real `ConsoleSession` on a pty (the QEMU guest's console is in
tests/system/test_provision_guest.py).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools/provision/provision"
EXAMPLES = REPO / "tools/provision/examples"
sys.path.insert(0, str(REPO / "tools/provision"))

import sipedge_provision as sp
from sipedge.config.loader import load_file, load_text

HOSTS = ["edge-fra-1", "edge-ber-1", "reg-fra-1"]
SECRETS = ["fra-Tr0nk-s3cret", "ber-Tr0nk-s3cret", "nonce-hmac-key-reg-fra-1-0123456789"]
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
need_fat_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("mcopy", "mtype", "mkfs.vfat", "sfdisk")),
    reason="needs mtools, dosfstools and fdisk (tests/apt-packages.txt)")


@pytest.fixture
def work(tmp_path):
    for name in ("inventory.toml", "inventory.yaml", "sipedge.toml.j2"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    return tmp_path


def run(work: Path, *args: str, inventory: str = "inventory.toml", stdin: str | None = None,
        outputs: list | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, str(TOOL), "-i", str(work / inventory), *args],
                       capture_output=True, text=True, input=stdin, timeout=120, cwd=work)
    if outputs is not None:
        outputs.append(p.stdout + p.stderr)
    return p


def rendered(work: Path, host: str) -> Path:
    return work / "rendered" / host / "sipedge.toml"


def test_render_three_hosts_three_valid_configs(work):
    p = run(work, "render")
    assert p.returncode == 0, p.stderr
    assert "3 host(s) rendered and valid" in p.stdout
    for host in HOSTS:
        path = rendered(work, host)
        cfg = load_file(path)  # the proxy's own loader, as on the box
        assert cfg.network.hostname == host
        assert oct(path.stat().st_mode & 0o777) == "0o600"  # holds the host's secrets
    assert [lp.port for lp in load_file(rendered(work, "edge-ber-1")).listen] == [5080, 5080]
    assert [v.id for v in load_file(rendered(work, "edge-fra-1")).network.vlan] == [100, 200]
    reg = load_file(rendered(work, "reg-fra-1"))
    assert reg.core.modules == ["registrar", "auth"] and reg.auth.secret == SECRETS[2]
    # the YAML inventory (Ansible layout) gives the same files
    yaml_out = work / "yaml"
    p = run(work, "-o", str(yaml_out), "render", inventory="inventory.yaml")
    assert p.returncode == 0, p.stderr
    for host in HOSTS:
        assert (yaml_out / host / "sipedge.toml").read_text() == rendered(work, host).read_text()
    # --limit takes hosts and groups
    p = run(work, "-o", str(work / "lim"), "render", "--limit", "core")
    assert p.returncode == 0 and sorted(os.listdir(work / "lim")) == [".provision.json",
                                                                      "reg-fra-1"]


def test_invalid_value_names_host_and_file_line_and_writes_nothing(work):
    assert run(work, "render").returncode == 0
    before = {h: rendered(work, h).read_bytes() for h in HOSTS}
    state = (work / "rendered" / ".provision.json").read_bytes()
    inv = work / "inventory.toml"
    inv.write_text(inv.read_text().replace("sip_port = 5080", "sip_port = 70000")
                   .replace('id = 100, address = "10.100.0.10/24"', 'id = 100, address = "10.100.0.11/24"'))
    p = run(work, "render")
    assert p.returncode == 1
    # host, the rendered file:line, the loader's message, the template line and the line itself
    assert re.search(r"edge-ber-1: \S*rendered/edge-ber-1/sipedge.toml:11: listen\[0\].port: "
                     r"must be <= 65535 \(template sipedge.toml.j2:12\)", p.stderr), p.stderr
    assert "11 | port = 70000" in p.stderr
    assert "nothing written (1 of 3 hosts have errors)" in p.stderr
    assert "edge-fra-1:" not in p.stderr  # the valid hosts are not blamed ...
    assert {h: rendered(work, h).read_bytes() for h in HOSTS} == before  # ... nor written
    assert (work / "rendered" / ".provision.json").read_bytes() == state
    # same message text as the box's loader gives for that file
    text = sp.Renderer(work / "sipedge.toml.j2", work / "rendered").render(
        sp.load_inventory(inv)["edge-ber-1"]).text
    with pytest.raises(Exception) as box:
        load_text(text, str(rendered(work, "edge-ber-1")))
    assert str(box.value).splitlines()[0] in p.stderr
    # a template error (undefined variable) names the template line, for every host
    tpl = work / "sipedge.toml.j2"
    tpl.write_text(tpl.read_text().replace("{{ gateway | toml }}", "{{ gatway | toml }}"))
    inv.write_text(inv.read_text().replace("sip_port = 70000", "sip_port = 5080"))
    p = run(work, "render")
    line = next(i for i, t in enumerate(tpl.read_text().splitlines(), 1) if "gatway" in t)
    for host in HOSTS:
        assert f"{host}: sipedge.toml.j2:{line}: 'gatway' is undefined" in p.stderr
    assert {h: rendered(work, h).read_bytes() for h in HOSTS} == before
    # nothing at all is created when the first render fails
    fresh = work / "fresh"
    p = run(work, "-o", str(fresh), "render")
    assert p.returncode == 1 and not fresh.exists()


def test_diff_against_last_render(work):
    p = run(work, "diff")
    assert p.returncode == 1 and p.stdout.count("(never rendered: the whole file is new)") == 3
    run(work, "render")
    p = run(work, "diff")
    assert p.returncode == 0 and p.stdout.count("no change") == 3
    inv = work / "inventory.toml"
    inv.write_text(inv.read_text().replace("sip_port = 5080", "sip_port = 5090")
                   .replace('vlans = [{ id = 100, address = "10.100.1.20/24" }]',
                            'vlans = [{ id = 100, address = "10.100.1.20/24" }, '
                            '{ id = 300, address = "10.30.0.1/24" }]'))
    p = run(work, "diff")
    assert p.returncode == 1
    assert "edge-fra-1: no change" in p.stdout and "reg-fra-1: no change" in p.stdout
    assert "  ~ listen[0].port: 5080 -> 5090" in p.stdout
    assert "  + network.vlan[1].id = 300" in p.stdout
    assert '  + network.vlan[1].name = "eth0.300"' in p.stdout
    # diff never writes
    assert 'port = 5080' in rendered(work, "edge-ber-1").read_text()
    # a host taken out of the inventory is reported, its last render kept
    text = inv.read_text()
    (work / "fewer.toml").write_text(text[:text.index("[all.children.core.vars]")])
    p = run(work, "diff", inventory="fewer.toml")
    assert "reg-fra-1: no longer in the inventory" in p.stdout and p.returncode == 1
    assert rendered(work, "reg-fra-1").exists()
    # image/card/push refuse a stale render
    p = run(work, "image", "--host", "edge-ber-1", "--image", str(work / "nothing.img"))
    assert p.returncode == 1 and "older than the inventory or template" in p.stderr


def _stand_in_image(path: Path, label: str = "dos") -> None:
    """A 24 MiB disk: partition 1 FAT (8 MiB at 1 MiB), partition 2 Linux, like the card."""
    with open(path, "wb") as fh:
        fh.truncate(24 << 20)
    fat = "c" if label == "dos" else "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
    lin = "83" if label == "dos" else "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
    table = f"label: {label}\nstart=2048, size=16384, type={fat}\nstart=18432, type={lin}\n"
    subprocess.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(path)], input=table,
                   text=True, check=True, capture_output=True)
    subprocess.run(["mkfs.vfat", "-n", "BOOT", "--offset", "2048", str(path), "8192"],
                   check=True, capture_output=True)
    (path.parent / "factory.toml").write_text("# factory default\n[core]\nworkers = 1\n")
    subprocess.run(["mcopy", "-i", f"{path}@@{2048 * 512}", str(path.parent / "factory.toml"),
                    "::/sipedge.toml"], check=True, env=MTOOLS_ENV)
    subprocess.run(["mcopy", "-i", f"{path}@@{2048 * 512}", str(path.parent / "factory.toml"),
                    "::/other.txt"], check=True, env=MTOOLS_ENV)


def mtype(image: Path, name: str = "sipedge.toml", offset: int = 2048 * 512) -> str:
    return subprocess.run(["mtype", "-i", f"{image}@@{offset}", f"::/{name}"], check=True,
                          capture_output=True, text=True, env=MTOOLS_ENV).stdout


@need_fat_tools
@pytest.mark.parametrize("label", ["dos", "gpt"])
def test_image_writes_config_into_fat_partition_of_a_copy(work, label):
    base = work / "base.img"
    _stand_in_image(base, label)
    base_sha = hashlib.sha256(base.read_bytes()).hexdigest()
    assert run(work, "render").returncode == 0
    p = run(work, "image", "--host", "edge-fra-1", "--image", str(base))
    assert p.returncode == 0, p.stderr
    path_line, sha_line = p.stdout.strip().splitlines()
    out = Path(path_line)
    assert out == work / "rendered/edge-fra-1/sipedge-edge-fra-1.img"
    assert sha_line == "sha256 " + hashlib.sha256(out.read_bytes()).hexdigest()
    assert (out.parent / (out.name + ".sha256")).read_text() == f"{sha_line[7:]}  {out.name}\n"
    assert mtype(out) == rendered(work, "edge-fra-1").read_text()
    assert mtype(out, "other.txt").startswith("# factory default")  # the rest is kept
    assert hashlib.sha256(base.read_bytes()).hexdigest() == base_sha  # base untouched
    assert sp.find_fat_partition(out) == 2048 * 512
    p = run(work, "image", "--host", "nope", "--image", str(base))
    assert p.returncode == 1 and "no host 'nope'" in p.stderr


@need_fat_tools
def test_card_on_a_file_standing_in_for_a_device(work):
    card = work / "card.img"
    _stand_in_image(card)
    assert run(work, "render").returncode == 0
    # no terminal to confirm on and no --yes: refused, nothing written
    p = run(work, "card", "--host", "reg-fra-1", str(card), stdin="y\n")
    assert p.returncode == 1 and "not confirmed" in p.stderr
    assert mtype(card).startswith("# factory default")
    assert "image file" in p.stdout and "~ core.workers: 1 -> 2" in p.stdout
    p = run(work, "card", "--host", "reg-fra-1", str(card), "--yes")
    assert p.returncode == 0, p.stderr
    assert mtype(card) == rendered(work, "reg-fra-1").read_text()
    assert "FAT partition at byte 1048576" in p.stdout
    # the same again: no change shown, written anyway (idempotent)
    p = run(work, "card", "--host", "reg-fra-1", str(card), "--yes")
    assert "sipedge.toml for reg-fra-1: no change" in p.stdout
    # a mounted boot partition is given as its directory
    mnt = work / "mnt"
    mnt.mkdir()
    p = run(work, "card", "--host", "edge-ber-1", str(mnt), "--yes")
    assert p.returncode == 0 and (mnt / "sipedge.toml").read_text() == \
        rendered(work, "edge-ber-1").read_text()
    # --image flashes a whole image onto the raw "device" first
    blank = work / "blank.img"
    with open(blank, "wb") as fh:
        fh.truncate(24 << 20)
    p = run(work, "card", "--host", "edge-fra-1", str(blank), "--image", str(card), "--yes")
    assert p.returncode == 0, p.stderr
    assert mtype(blank) == rendered(work, "edge-fra-1").read_text()
    assert mtype(blank, "other.txt").startswith("# factory default")


def test_secrets_are_masked_in_every_output(work):
    outputs: list[str] = []
    inv = work / "inventory.toml"
    tpl = work / "sipedge.toml.j2"
    # 1. an error on a line that holds a secret (a quote in the password breaks hand-quoting)
    good_tpl = tpl.read_text()
    tpl.write_text(good_tpl.replace(
        '{{ ("user=" ~ trunk_user ~ ";password=" ~ trunk_password) | toml }}',
        '"user={{ trunk_user }};password={{ trunk_password }}"'))
    inv.write_text(inv.read_text().replace("ber-Tr0nk-s3cret", 'ber-Tr0nk-s3cret\\"q'))
    p = run(work, "render", outputs=outputs)
    assert p.returncode == 1 and "edge-ber-1" in p.stderr and "***" in p.stderr
    # 2. a good render, a diff that changes secrets, an unknown module named by a secret
    tpl.write_text(good_tpl)
    assert run(work, "render", outputs=outputs).returncode == 0
    inv.write_text(inv.read_text().replace("fra-Tr0nk-s3cret", "fra-Tr0nk-s3cret-2")
                   .replace("nonce-hmac-key-reg-fra-1-0123456789",
                            "nonce-hmac-key-reg-fra-1-9876543210"))
    p = run(work, "diff", outputs=outputs)
    assert "~ dispatcher.destination[0].attrs: *** -> *** (secret changed)" in p.stdout
    assert "~ auth.secret: *** -> *** (secret changed)" in p.stdout
    assert run(work, "render", outputs=outputs).returncode == 0
    # 3. a secret variable named by secret_vars, used where the loader quotes the value
    inv.write_text(inv.read_text().replace('role = "registrar"',
                                           'role = "registrar"\nsecret_vars = ["site_code"]\n'
                                           'site_code = "xyzzy-site-42"'))
    tpl.write_text(good_tpl.replace('(["registrar", "auth"] if', '([site_code] if'))
    p = run(work, "render", "--limit", "reg-fra-1", outputs=outputs)
    assert p.returncode == 1 and "unknown module '***'" in p.stderr
    if shutil.which("mcopy") and shutil.which("sfdisk"):
        tpl.write_text(good_tpl)
        base = work / "base.img"
        _stand_in_image(base)
        run(work, "image", "--host", "reg-fra-1", "--image", str(base), outputs=outputs)
        run(work, "card", "--host", "reg-fra-1", str(base), "--yes", outputs=outputs)
    everything = "\n".join(outputs)
    assert "***" in everything
    for secret in SECRETS + ["fra-Tr0nk-s3cret-2", "nonce-hmac-key-reg-fra-1-9876543210",
                             "xyzzy-site-42", "pbkdf2_sha256$"]:
        assert secret not in everything, secret


# ---------------------------------------------------------------------------- push over a pty


class Backend:
    """What the console needs for `config import -`, on a real BootConfigManager."""

    def __init__(self, tmp: Path, text: str) -> None:
        from sipedge.appliance.sdconfig import BootConfigManager

        (tmp / "boot").mkdir()
        self.src = BootConfigManager(tmp / "boot" / "sipedge.toml", tmp / "data")
        self.src.boot_path.write_text(text)
        self.applied = 0

    def boot_text(self) -> str:
        return self.src.boot_text()

    def check_text(self, text: str) -> list[str]:
        return [str(i) for i in self.src.check_text(text)]

    def write_boot(self, text: str) -> None:
        self.src.write_boot(text)

    def apply(self) -> None:
        self.applied += 1


def _pty_pair() -> tuple[str, str, threading.Event]:
    """Two ptys joined like a null-modem cable: (box side path, operator side path, stop)."""
    m1, s1 = os.openpty()
    m2, s2 = os.openpty()
    for fd in (s1, s2):  # no echo from either end: a cable does not echo
        tty.setraw(fd)
    stop = threading.Event()

    def pump() -> None:
        import select

        while not stop.is_set():
            r, _, _ = select.select([m1, m2], [], [], 0.1)
            for src, dst in ((m1, m2), (m2, m1)):
                if src in r:
                    try:
                        data = os.read(src, 4096)
                    except OSError:
                        continue
                    os.write(dst, data)

    threading.Thread(target=pump, daemon=True).start()
    return os.ttyname(s1), os.ttyname(s2), stop


def test_push_over_a_serial_console(work, tmp_path):
    from sipedge.appliance.auth import LoginGuard, hash_password
    from sipedge.appliance.console import ConsoleSession, SerialConsole

    assert run(work, "render").returncode == 0
    old = rendered(work, "edge-fra-1").read_text().replace("port = 5060", "port = 5070") \
        .replace("fra-Tr0nk-s3cret", "OLD-trunk-pw-9")  # the box's secret, unknown here
    backend = Backend(tmp_path, old)
    pw_hash = hash_password("field-tech", iterations=1000)
    session = ConsoleSession(backend, lambda: pw_hash, LoginGuard(3, 60))
    box_tty, our_tty, stop = _pty_pair()
    console = SerialConsole(box_tty, session)
    console.start()
    env = {**os.environ, "SIPEDGE_CONSOLE_PASSWORD": "field-tech"}
    try:
        cmd = [sys.executable, str(TOOL), "-i", str(work / "inventory.toml"), "push", "--host",
               "edge-fra-1", "--serial", our_tty, "--timeout", "20"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)  # no tty
        assert p.returncode == 1 and "not confirmed" in p.stderr, p.stdout + p.stderr
        assert backend.boot_text() == old
        p = subprocess.run(cmd + ["--yes"], capture_output=True, text=True, timeout=120, env=env)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "-port = 5070" in p.stdout and "+port = 5060" in p.stdout  # the box's own diff
        assert "edge-fra-1: applied" in p.stdout
        assert backend.boot_text() == rendered(work, "edge-fra-1").read_text()
        assert backend.applied == 1
        assert "-attrs = ***" in p.stdout and "+attrs = ***" in p.stdout
        for secret in ("fra-Tr0nk-s3cret", "OLD-trunk-pw-9", "field-tech", "pbkdf2_sha256$"):
            assert secret not in p.stdout + p.stderr
        p = subprocess.run(cmd + ["--yes"], capture_output=True, text=True, timeout=120, env=env)
        assert p.returncode == 0 and "edge-fra-1: unchanged" in p.stdout, p.stdout + p.stderr
        bad = {**env, "SIPEDGE_CONSOLE_PASSWORD": "wrong"}
        p = subprocess.run(cmd + ["--yes"], capture_output=True, text=True, timeout=120, env=bad)
        assert p.returncode == 1 and "login incorrect" in p.stderr and "wrong" not in p.stderr
    finally:
        console.stop()
        stop.set()


def test_template_line_through_macro_include_and_loop(tmp_path):
    """Errors point at the template line that produced the value, also inside an included
    template, a macro call or a loop."""
    (tmp_path / "inventory.yaml").write_text("all:\n  hosts:\n    a:\n      ports: [5060, 70000]\n")
    (tmp_path / "listen.j2").write_text('# included\n{% for p in ports %}\n[[listen]]\n'
                                        'proto = "udp"\nport = {{ p }}\n{% endfor %}\n')
    (tmp_path / "sipedge.toml.j2").write_text(
        '{% macro kv(k, v) %}{{ k }} = {{ v | toml }}{% endmacro %}\n[core]\n'
        '{{ kv("workers", 70) }}\n\n{% include "listen.j2" %}\n')
    renderer = sp.Renderer(tmp_path / "sipedge.toml.j2", tmp_path / "out")
    r = renderer.render(sp.load_inventory(tmp_path / "inventory.yaml")["a"])
    assert len(r.errors) == 2, r.errors
    assert "sipedge.toml:2: core.workers: must be <= 64 (template " in r.errors[0]
    assert "sipedge.toml.j2:3)" in r.errors[0]
    assert "listen[1].port: must be <= 65535" in r.errors[1] and "listen.j2:5)" in r.errors[1]
    assert not (tmp_path / "out").exists()


def test_inventory_precedence_groups_and_errors(tmp_path):
    inv = tmp_path / "inv.toml"
    inv.write_text('[all.vars]\nport = 1\nrole = "x"\n'
                   '[all.children.a.vars]\nport = 2\n'
                   '[all.children.a.children.a1.vars]\nport = 3\n'
                   '[all.children.a.children.a1.hosts.h1]\n'
                   '[all.children.b.vars]\nport = 9\nsecret_vars = ["role"]\nrole = "y"\n'
                   '[all.children.b.hosts.h2]\nport = 4\n'
                   '[all.children.z.vars]\nport = 5\n[all.children.z.hosts.h1]\n')
    hosts = sp.load_inventory(inv)
    assert list(hosts) == ["h1", "h2"]
    # all < a (depth 1) < z (depth 1, later name) < a1 (depth 2) < host
    assert hosts["h1"].vars["port"] == 3 and hosts["h1"].groups == ["a", "a1", "z"]
    assert hosts["h2"].vars["port"] == 4 and hosts["h2"].vars["hostname"] == "h2"
    assert hosts["h1"].vars["groups"]["a"] == ["h1"]
    assert "y" in hosts["h2"].secrets and "x" not in hosts["h1"].secrets  # secret_vars
    for text, message in [('[all.children.g]\nhost = {}\n', "unknown key(s) host"),
                          ('[all.hosts."bad name"]\n', "host 'bad name'"),
                          ("[all.vars]\n", "no hosts"),
                          ("[all\n", "inv.toml")]:
        inv.write_text(text)
        with pytest.raises(sp.ProvisionError, match=re.escape(message)):
            sp.load_inventory(inv)


@need_fat_tools
@pytest.mark.needs_root
def test_card_on_a_real_block_device(work):
    """`card` on a real block device: a loop device with the kernel's partition scan, as a
    USB card reader's /dev/sdX shows up (/dev/loopN, /dev/loopNp1, p2). Written raw when
    nothing of it is mounted; refused, with nothing written, while a partition is mounted."""
    card = work / "card.img"
    _stand_in_image(card)
    assert run(work, "render").returncode == 0
    p = subprocess.run(["losetup", "--find", "--show", "--partscan", str(card)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"no loop device here: {p.stderr.strip()}")
    dev = p.stdout.strip()
    mnt = work / "mnt"
    mnt.mkdir()
    made: list[Path] = []
    try:
        sysfs = Path("/sys/class/block") / (Path(dev).name + "p2")
        deadline = time.monotonic() + 2
        while not sysfs.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not sysfs.exists():  # the scan gave nothing (seen in containers): ask again
            subprocess.run(["partx", "-a", dev], capture_output=True)
        for n in (1, 2):  # no udev (a container): make the nodes the kernel announced
            part, sysdev = Path(f"{dev}p{n}"), Path(f"/sys/class/block/{Path(dev).name}p{n}/dev")
            if not part.exists() and sysdev.exists():
                major, minor = sysdev.read_text().split(":")
                os.mknod(part, 0o600 | stat.S_IFBLK, os.makedev(int(major), int(minor)))
                made.append(part)
        p = run(work, "card", "--host", "reg-fra-1", dev, "--yes")
        assert p.returncode == 0, p.stderr
        assert f"block device {dev}" in p.stdout and "FAT partition at byte 1048576" in p.stdout
        with open(dev, "rb") as fh:  # read back through the device, not the file
            fh.seek(0)
            copy = work / "readback.img"
            copy.write_bytes(fh.read())
        assert mtype(copy) == rendered(work, "reg-fra-1").read_text()
        # one of its partitions mounted (the card's ext4 data partition; this kernel may have
        # no vfat): the raw device is refused and nothing is written
        data = Path(dev + "p2")
        if not data.exists():
            pytest.skip("the kernel did not create the partition devices")
        subprocess.run(["mkfs.ext4", "-q", "-F", str(data)], check=True, capture_output=True)
        subprocess.run(["mount", "-t", "ext4", str(data), str(mnt)], check=True)
        try:
            p = run(work, "card", "--host", "edge-ber-1", dev, "--yes")
            assert p.returncode != 0 and f"{data} is mounted on {mnt}" in p.stderr, \
                (p.stdout, p.stderr)
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
        with open(dev, "rb") as fh:
            copy.write_bytes(fh.read())
        assert mtype(copy) == rendered(work, "reg-fra-1").read_text()  # untouched
    finally:
        subprocess.run(["losetup", "-d", dev], check=True)
        for node in made:
            node.unlink()
