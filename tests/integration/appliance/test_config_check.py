"""`config check` / `config set` run what `sipedge --check-config` runs (issue 11, point 2)."""

import subprocess

import pytest

from sipedge.appliance.sdconfig import BootConfigManager

BASE = '[core]\nworkers = 1\n\n[routing]\nscript = "%s"\n'


def test_full_check_catches_a_missing_script_and_resolves_relative_paths(tmp_path):
    (tmp_path / "boot").mkdir()
    m = BootConfigManager(tmp_path / "boot" / "sipedge.toml", tmp_path / "data")
    errors = m.full_check(BASE % "/data/missing.py")
    assert len(errors) == 1 and "routing.script" in errors[0] and "missing.py" in errors[0]
    assert m.check_text(BASE % "/data/missing.py") == []  # the schema alone does not see it
    # a relative script is relative to the boot file's directory, as when the proxy runs it
    (tmp_path / "boot" / "route.py").write_text("def request_route(msg):\n    return None\n")
    assert m.full_check(BASE % "route.py") == []
    assert m.full_check(BASE % "sipedge:examples/registrar_route.py") == []
    errors = m.full_check('[core]\nworkers = 0\n')
    assert len(errors) == 1 and "core.workers" in errors[0]
    assert str(m.boot_path) in errors[0]  # named as the boot file, not the temporary copy


LISTEN = '[[listen]]\nproto = "%s"\naddress = "127.0.0.1"\nport = %d\n'


def _free_port(kind) -> int:
    import socket

    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.needs_root
def test_start_time_checks_name_a_taken_port_and_an_unwritable_data_path(tmp_path):
    """Beyond --check-config: a port another program holds and a data file whose directory
    cannot be written are reported with file:line; the running proxy's own ports are not."""
    import socket

    from sipedge.config import load_text

    (tmp_path / "boot").mkdir()
    m = BootConfigManager(tmp_path / "boot" / "sipedge.toml", tmp_path / "data")
    ctl = f'[core]\nworkers = 1\nctl_socket = "{tmp_path}/run/ctl.sock"\n'
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        text = ctl + "\n" + LISTEN % ("udp", port)
        errors = m.full_check(text)
        assert len(errors) == 1, errors
        assert errors[0].startswith(f"{m.boot_path}:8: listen[0].port: udp 127.0.0.1:{port} "
                                    "is already in use"), errors
        # the running proxy holding it is what the candidate replaces: no error
        assert m.full_check(text, running=load_text(text, str(m.boot_path))) == []
    # TCP too
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        errors = _start_problems(m, ctl + "\n" + LISTEN % ("tcp", port))
        assert len(errors) == 1 and "tcp 127.0.0.1:" in errors[0], errors
    # a registrar database under a file (not a directory) and a control socket on a
    # read-only file system (a tmpfs mounted ro for the test, as /boot is on the box)
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "sipedge-test", str(ro)], check=True)
    try:
        _unwritable_paths(m, tmp_path, ro)
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def _start_problems(m, text):
    """The start-time part alone (full_check runs it after the --check-config child)."""
    from sipedge.appliance.startcheck import start_problems
    from sipedge.config import load_text

    return [str(i) for i in start_problems(load_text(text, str(m.boot_path)))]


def _unwritable_paths(m, tmp_path, ro):
    import socket

    free = _free_port(socket.SOCK_DGRAM)
    text = (f'[core]\nworkers = 1\nmodules = ["registrar"]\nctl_socket = "{ro}/run/ctl.sock"\n\n'
            + LISTEN % ("udp", free)
            + f'\n[registrar]\ndb_path = "{tmp_path}/boot/sipedge.toml.d/x/location.sqlite"\n')
    (tmp_path / "boot" / "sipedge.toml.d").write_text("a file")
    errors = _start_problems(m, text)
    keys = sorted(e.split(": ")[1] for e in errors)
    assert keys == ["core.ctl_socket", "registrar.db_path"], errors
    assert any(f":4: core.ctl_socket: {ro}/run/ctl.sock: {ro} is on a read-only file system" in e
               for e in errors), errors
    assert any(":12: registrar.db_path:" in e and "is not a directory" in e for e in errors), errors


def test_start_time_checks_cover_every_instance(tmp_path):
    """With [instances.<name>], each instance's listeners are checked and named as in the file."""
    import socket

    from sipedge.appliance.startcheck import start_problems
    from sipedge.config import load_text

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        free = _free_port(socket.SOCK_DGRAM)
        text = (f'[instances.a]\n[instances.a.core]\nworkers = 1\nctl_socket = "{tmp_path}/a.sock"\n'
                f'[[instances.a.listen]]\naddress = "127.0.0.1"\nport = {free}\n\n'
                f'[instances.b]\n[instances.b.core]\nworkers = 1\nctl_socket = "{tmp_path}/b.sock"\n'
                f'[[instances.b.listen]]\naddress = "127.0.0.1"\nport = {port}\n')
        cfg = load_text(text, str(tmp_path / "box.toml"))
        errors = [str(i) for i in start_problems(cfg)]
        assert len(errors) == 1, errors
        assert errors[0].startswith(f"{tmp_path}/box.toml:15: instances.b.listen[0].port: udp "
                                    f"127.0.0.1:{port} is already in use"), errors
        assert start_problems(cfg, running=cfg) == []
