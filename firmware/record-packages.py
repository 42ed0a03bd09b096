#!/usr/bin/env python3
"""Record the BR2_PACKAGE_* symbols of a Buildroot tree into firmware/buildroot-packages.tsv.

usage: record-packages.py BUILDROOT_DIR VERSION COMMIT > firmware/buildroot-packages.tsv

Run it when bumping Buildroot (firmware/buildroot.mk), on a checkout of the new tag. Symbols
come from package/*/Config.in*; the version from the package's .mk; symbols only declared in
Config.in.legacy get the status legacy-removed-in-<release>. Standard library only.
"""
import re
import sys
from pathlib import Path

DECL = re.compile(r"^\s*(?:menu)?config\s+(BR2_PACKAGE_\w+)", re.M)


def main(argv) -> int:
    if len(argv) != 4:
        sys.stderr.write(__doc__)
        return 2
    top, version, commit = Path(argv[1]), argv[2], argv[3]
    rows = {}
    for pkgdir in sorted(p for p in (top / "package").rglob("*") if p.is_dir()):
        configs = sorted(pkgdir.glob("Config.in*"))
        if not configs:
            continue
        mk = pkgdir / f"{pkgdir.name}.mk"
        ver = "-"
        if mk.exists():
            var = pkgdir.name.upper().replace("-", "_").replace(".", "_")
            text = mk.read_text(errors="replace")
            m = re.search(rf"^{re.escape(var)}_VERSION\s*[:?]?=\s*(.+)$", text, re.M)
            ver = m.group(1).strip() if m else "-"
        for cfg in configs:
            for sym in DECL.findall(cfg.read_text(errors="replace")):
                rows.setdefault(sym, (pkgdir.name, ver, "active"))
    for cfg in [*top.glob("Config.in*"), *top.glob("*/Config.in*")]:
        if cfg.name == "Config.in.legacy":
            continue
        for sym in DECL.findall(cfg.read_text(errors="replace")):
            rows.setdefault(sym, ("-", "-", "active"))
    legacy = top / "Config.in.legacy"
    if legacy.exists():
        release = "unknown"
        for line in legacy.read_text(errors="replace").splitlines():
            m = re.match(r'\s*comment\s+"Legacy options removed in (\S+)"', line)
            if m:
                release = m.group(1)
            m = DECL.match(line)
            if m:
                rows.setdefault(m.group(1), ("-", "-", f"legacy-removed-in-{release}"))
    out = sys.stdout
    out.write(f"# BR2_PACKAGE_* symbols of the pinned Buildroot (firmware/buildroot.mk: {version},\n"
              f"# commit {commit}). Recorded from that tree's package/*/Config.in*\n"
              "# and Config.in.legacy (status legacy-removed-in-X) so the static check runs offline.\n"
              "# Regenerate when bumping Buildroot (docs/operations.md, \"Bumping Buildroot\").\n")
    out.write("symbol\tpackage\tversion\tstatus\n")
    for sym in sorted(rows):
        out.write("%s\t%s\t%s\t%s\n" % (sym, *rows[sym]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
