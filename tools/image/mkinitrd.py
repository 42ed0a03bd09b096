#!/usr/bin/env python3
"""Build the tiny initrd of the offline image on the host (no chroot, any target arch).

usage: mkinitrd.py ROOT OUTPUT [--modules "NAME,NAME NAME,..."]

The initrd holds the target's static BusyBox (taken from ROOT), the kernel modules needed to
reach the root filesystem and mount the boot partition (with their dependencies, from ROOT's
modules.dep; built-in ones are skipped; inserted in parallel groups) and a small /init. /init understands root=/dev/X, root=PARTUUID=<mbr-sig>-<nn> and
root=LABEL=..., mounts the root read-only and switch_roots to init= (default /sbin/init).
If the root cannot be found within 20 s it prints "sipedge-initrd: FATAL" and reboots: on an
A/B box the boot has spent one of the slot's tries, so a slot whose kernel cannot reach its
root ends up rolled back by the bootloader instead of a box that stays off (a test VM run
with -no-reboot ends instead of hanging).

The cpio archive (newc) is written here, so no root rights or cpio binary are needed.
"""
import argparse
import gzip
import io
import os
import stat
import sys
from pathlib import Path

# Only what the root disk and the boot partition need: the image boots from virtio-blk on
# PCI (tools/vm). The SCSI stack (virtio_scsi, sd_mod and their CRC/T10 dependencies) and
# virtio_mmio cost about a second of module loading under emulation before the root was
# mounted (issue 13); sd_mod for USB sticks is loaded from the root filesystem by udev when
# one appears. vfat and the code page and character set its mount asks for by default
# (Debian: CONFIG_FAT_DEFAULT_CODEPAGE=437, CONFIG_FAT_DEFAULT_IOCHARSET="ascii") are
# inserted here beside the others: mounted from the root filesystem, /boot's mount waited
# for three module requests (three kmod starts), about a second under emulation.
# Comma-separated names form one group; the groups are inserted in parallel (each in its
# dependency order), so the ext4 and FAT modules load while virtio_pci probes its devices.
DEFAULT_MODULES = (
    "virtio_pci,virtio_blk",
    "crc32c_generic,crc32c_intel,ext4",
    "vfat,nls_cp437,nls_ascii",
)

INIT = r"""#!/bin/busybox sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fatal() {
	echo "sipedge-initrd: FATAL: $*"
	if grep -qw sipedge.initrd_shell /proc/cmdline; then exec sh; fi
	sleep 1
	reboot -f
}

# one background job per group of modules (mkinitrd.py DEFAULT_MODULES), each in its order
for group in /etc/modules.order.*; do
	while read -r mod; do
		insmod "/lib/modules/$mod" 2>/dev/null
	done <"$group" &
done
wait

root= fstype=ext4 flags=ro init=/sbin/init
for arg in $(cat /proc/cmdline); do
	case $arg in
	root=*) root=${arg#root=} ;;
	rootfstype=*) fstype=${arg#rootfstype=} ;;
	rw) flags=rw ;;
	init=*) init=${arg#init=} ;;
	esac
done
[ -n "$root" ] || fatal "no root= on the kernel command line"

# find_partuuid SIG NN: kernel name of partition NN on the MBR disk whose signature is SIG.
find_partuuid() {
	for disk in /sys/block/*; do
		name=${disk##*/}
		[ -b "/dev/$name" ] || continue
		sig=$(od -An -tx4 -j440 -N4 "/dev/$name" 2>/dev/null | tr -d ' ')
		[ "$sig" = "$1" ] || continue
		for p in "$disk"/"$name"*/partition; do
			[ -e "$p" ] || continue
			if [ "$(printf '%02x' "$(cat "$p")")" = "$2" ]; then
				p=${p%/partition}
				echo "/dev/${p##*/}"
				return 0
			fi
		done
	done
	return 1
}

dev=
tries=0
while [ $tries -lt 200 ]; do
	case $root in
	PARTUUID=*)
		id=${root#PARTUUID=}
		dev=$(find_partuuid "${id%-*}" "${id##*-}")
		;;
	LABEL=* | UUID=*) dev=$(findfs "$root" 2>/dev/null) ;;
	*) [ -b "$root" ] && dev=$root ;;
	esac
	[ -n "$dev" ] && break
	tries=$((tries + 1))
	sleep 0.1
done
[ -n "$dev" ] || fatal "root device $root not found"
mount -t "$fstype" -o "$flags" "$dev" /newroot || fatal "cannot mount $dev ($fstype) on /newroot"
[ -x "/newroot$init" ] || [ -L "/newroot$init" ] || fatal "no $init on $dev"
# /dev, /proc and /sys go along: init's rcS and S00mount need not mount them again
mount --move /dev /newroot/dev
mount --move /proc /newroot/proc || umount /proc
mount --move /sys /newroot/sys || umount /sys
exec switch_root /newroot "$init"
"""


class Cpio:
    """Minimal writer for the 'newc' cpio format the kernel unpacks."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.ino = 1000

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)):
        self.ino += 1
        name_b = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.buf.write(header + name_b)
        self.buf.write(b"\0" * (-(len(header) + len(name_b)) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-len(data) % 4))

    def dir(self, name: str):
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644):
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str):
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int):
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def module_closure(moddir: Path, wanted: list[str]) -> list[str]:
    """Paths (relative to moddir) of the wanted modules and their deps, dependencies first."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        by_name[Path(path).name.split(".ko")[0].replace("-", "_")] = path
    builtin = set()
    builtin_file = moddir / "modules.builtin"
    if builtin_file.exists():
        for line in builtin_file.read_text().splitlines():
            builtin.add(Path(line).name.split(".ko")[0].replace("-", "_"))
    order: list[str] = []

    def visit(path: str):
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in wanted:
        key = name.replace("-", "_")
        if key in by_name:
            visit(by_name[key])
        elif key not in builtin:
            print(f"mkinitrd: module {name} neither built in nor available; skipped", file=sys.stderr)
    return order


def find_busybox(root: Path) -> Path:
    for rel in ("usr/bin/busybox", "bin/busybox"):
        p = root / rel
        if p.is_file() and not p.is_symlink():
            return p
    raise SystemExit(f"mkinitrd: no static busybox in {root} (install busybox-static)")


def module_groups(moddir: Path, groups: list[list[str]]) -> list[list[str]]:
    """The closure of each group (module_closure); groups that share a module are merged, so
    that parallel inserts never need a module another group is still inserting."""
    closures = [module_closure(moddir, g) for g in groups]
    merged: list[list[str]] = []
    for order in closures:
        for other in [m for m in merged if set(m) & set(order)]:
            merged.remove(other)
            order = other + [p for p in order if p not in other]
        merged.append(order)
    return [m for m in merged if m]


# The applets /init runs, as links made here (instead of `busybox --install` at boot).
APPLETS = ("cat", "findfs", "grep", "insmod", "mount", "od", "printf", "reboot", "sh", "sleep",
           "switch_root", "tr", "umount")


def build(root: Path, output: Path, groups: list[list[str]]) -> int:
    kvers = sorted(p.name for p in (root / "usr/lib/modules").iterdir() if (p / "modules.dep").exists())
    if not kvers:
        raise SystemExit(f"mkinitrd: no kernel modules with modules.dep in {root}/usr/lib/modules")
    moddir = root / "usr/lib/modules" / kvers[-1]
    orders = module_groups(moddir, groups)
    cpio = Cpio()
    for d in ("bin", "dev", "etc", "lib", "lib/modules", "newroot", "proc", "run", "sys"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.file("bin/busybox", find_busybox(root).read_bytes(), 0o755)
    for applet in APPLETS:
        cpio.symlink(f"bin/{applet}", "busybox")
    cpio.file("init", INIT.encode(), 0o755)
    for i, order in enumerate(orders):
        names = []
        for rel in order:
            name = rel.replace("/", "_")
            names.append(name)
            cpio.file(f"lib/modules/{name}", (moddir / rel).read_bytes())
        cpio.file(f"etc/modules.order.{i}", ("\n".join(names) + "\n").encode())
    order = [p for o in orders for p in o]
    data = gzip.compress(cpio.finish(), compresslevel=6, mtime=0)
    tmp = output.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, output)
    print(f"mkinitrd: {output} {len(data)} bytes, kernel {kvers[-1]}, {len(order)} modules")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("output", type=Path)
    ap.add_argument("--modules", default=" ".join(DEFAULT_MODULES),
                    help="groups of modules inserted in parallel: space-separated groups of "
                    "comma-separated names (default: %(default)s)")
    args = ap.parse_args(argv)
    groups = [[m for m in g.split(",") if m] for g in args.modules.split()]
    return build(args.root, args.output, [g for g in groups if g])


if __name__ == "__main__":
    sys.exit(main())
