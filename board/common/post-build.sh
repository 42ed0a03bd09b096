#!/bin/sh
# Post-build step shared by every board: Buildroot runs it as BR2_ROOTFS_POST_BUILD_SCRIPT
# (arg 1 = TARGET_DIR), tools/image/mkimage.py runs it on the offline Debian rootfs.
# Anything generated in the root filesystem belongs here, not in rootfs/ (static overlay).
set -eu
target=${1:?usage: post-build.sh TARGET_DIR [BOARD_DIR]}
boarddir=${2:-}

# Board facts the supervisor reads at run time (LED names).
if [ -n "$boarddir" ]; then
	install -D -m 0644 "$boarddir/meta" "$target/usr/share/sipedge/board"
fi

# Mount points: FAT boot partition (read-only) and the data partition.
mkdir -p "$target/boot" "$target/data"
# The root filesystem is read-only: udhcpc writes the resolver config into /run.
ln -sfn ../run/resolv.conf "$target/etc/resolv.conf"
# BusyBox init reads /etc/inittab from the overlay; nothing else may start services.
rm -f "$target/etc/init.d/S40network" # Buildroot's ifupdown script; S20network does DHCP
rm -f "$target/etc/init.d/S49chrony"  # the supervisor runs chronyd from [network] ntp_servers
