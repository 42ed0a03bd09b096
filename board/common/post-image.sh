#!/bin/sh
# Buildroot BR2_ROOTFS_POST_IMAGE_SCRIPT for every sipedge board.
#   arg 1: BINARIES_DIR (Buildroot passes it)
#   arg 2: the board directory (BR2_ROOTFS_POST_SCRIPT_ARGS), holding meta and genimage.cfg
# Writes cmdline.txt and sipedge.toml for the FAT partition, an empty data.ext4, and then
# runs genimage with the board's layout. Sizes and the disk signature come from meta.
set -eu
bindir=${1:?BINARIES_DIR}
boarddir=${2:?board directory}
common=$(cd "$(dirname "$0")" && pwd)

# shellcheck source=SCRIPTDIR/../raspberrypi4_64/meta
. "$boarddir/meta"
export SIPEDGE_KERNEL_IMAGE="$KERNEL_IMAGE" SIPEDGE_BOOT_SIZE="$BOOT_SIZE" \
	SIPEDGE_BOOT_OFFSET="$BOOT_OFFSET" SIPEDGE_ROOTFS_SIZE="$ROOTFS_SIZE" \
	SIPEDGE_DISK_SIGNATURE="$DISK_SIGNATURE"

sig=$(printf '%08x' "$DISK_SIGNATURE")
console=$CONSOLE
[ "$BOARD_ID" = raspberrypi4_64 ] && console="serial0,115200"
echo "root=PARTUUID=$sig-02 rootfstype=ext4 rootwait ro console=$console sipedge.slot=A" >"$bindir/cmdline.txt"
cp "$common/sipedge.toml" "$bindir/sipedge.toml"
[ -f "$boarddir/config.txt" ] && cp "$boarddir/config.txt" "$bindir/config.txt"

mke2fs=mke2fs
[ -x "${HOST_DIR:-/nonexistent}/sbin/mke2fs" ] && mke2fs=$HOST_DIR/sbin/mke2fs
rm -f "$bindir/data.ext4"
"$mke2fs" -q -F -t ext4 -L sipedge-data "$bindir/data.ext4" "$DATA_SIZE"

tmp=${BUILD_DIR:-$bindir}/genimage.tmp
root=${BUILD_DIR:-$bindir}/genimage.root
rm -rf "$tmp" "$root"
mkdir -p "$root"
genimage=genimage
[ -x "${HOST_DIR:-/nonexistent}/bin/genimage" ] && genimage=$HOST_DIR/bin/genimage
"$genimage" --config "$boarddir/genimage.cfg" --rootpath "$root" --tmppath "$tmp" \
	--inputpath "$bindir" --outputpath "$bindir"
rm -rf "$tmp" "$root"

# U-Boot boards (issue 12): the environment image built from board/*/uboot-env.txt by
# host-uboot-tools goes onto the FAT as uboot.env (CONFIG_ENV_FAT_FILE)
if [ -f "$bindir/uboot-env.bin" ]; then
	cp "$bindir/uboot-env.bin" "$bindir/uboot.env"
fi
