"""`config check` / `config set` run what `sipedge --check-config` runs (issue 11, point 2)."""

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
