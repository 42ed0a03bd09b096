"""tools/image/mkinitrd.py: the module groups /init inserts in parallel (issue 13) and the
archive it writes, on a made-up modules tree (no kernel, no root rights)."""
import gzip
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _mkinitrd():
    spec = importlib.util.spec_from_file_location("mkinitrd", REPO / "tools/image/mkinitrd.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


DEP = """kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/lib/crc16.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/lib/crc16.ko
kernel/fs/fat/fat.ko:
kernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko
kernel/fs/nls/nls_cp437.ko:
kernel/fs/other/needs_crc16.ko: kernel/lib/crc16.ko
"""


def _tree(tmp_path: Path) -> Path:
    moddir = tmp_path / "usr/lib/modules/6.1.0-test"
    for line in DEP.splitlines():
        path = line.split(":")[0]
        (moddir / path).parent.mkdir(parents=True, exist_ok=True)
        (moddir / path).write_bytes(b"\x7fELF " + path.encode())
    (moddir / "modules.dep").write_text(DEP)
    (moddir / "modules.builtin").write_text("kernel/lib/crc32c_generic.ko\n")
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/busybox").write_bytes(b"\x7fELF busybox")
    return moddir


def test_groups_keep_dependency_order_and_merge_when_they_share_a_module(tmp_path):
    m = _mkinitrd()
    moddir = _tree(tmp_path)
    groups = m.module_groups(moddir, [["virtio_pci", "virtio_blk"], ["crc32c_generic", "ext4"],
                                      ["vfat", "nls_cp437"], ["needs_crc16"]])
    names = [[Path(p).stem for p in g] for g in groups]
    # virtio and FAT stand alone; needs_crc16 shares crc16 with ext4: one group, crc16 once
    assert ["virtio_ring", "virtio", "virtio_pci", "virtio_blk"] in names
    assert ["fat", "vfat", "nls_cp437"] in names
    assert ["jbd2", "crc16", "ext4", "needs_crc16"] in names
    assert len(groups) == 3
    every = [p for g in groups for p in g]
    assert len(every) == len(set(every))


def test_archive_has_one_order_file_per_group_and_the_applet_links(tmp_path):
    m = _mkinitrd()
    _tree(tmp_path)
    out = tmp_path / "initrd.img"
    m.build(tmp_path, out, [["virtio_blk"], ["ext4"], ["vfat"]])
    data = gzip.decompress(out.read_bytes())
    for i in range(3):
        assert f"etc/modules.order.{i}".encode() in data
    assert b"etc/modules.order\x00" not in data
    for applet in ("insmod", "mount", "switch_root", "sh"):
        assert f"bin/{applet}\x00".encode() in data
    init = m.INIT
    assert "busybox --install" not in init
    assert "for group in /etc/modules.order.*" in init and "\nwait\n" in init
    assert "mount --move /proc /newroot/proc" in init
