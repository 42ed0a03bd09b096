#!/bin/sh
# mkbase.sh ARCH DEST: build the Debian bookworm base root filesystem of the offline image.
#
# mmdebstrap (root mode, minbase) with the packages in debian-packages.txt. No initramfs is
# generated in the chroot: a dummy package provides linux-initramfs-tool, and the host builds
# a tiny initrd later (mkinitrd.py). Downloaded .deb files are kept in
# ${SIPEDGE_DEB_CACHE:-/var/cache/sipedge-debs}/ARCH between runs.
# Apt sources: $SIPEDGE_APT_SOURCES (a mmdebstrap MIRROR argument), else the host's
# /etc/apt/sources.list.d/debian.sources, else deb.debian.org.
set -eu

arch=${1:?usage: mkbase.sh ARCH DEST}
dest=${2:?usage: mkbase.sh ARCH DEST}
here=$(cd "$(dirname "$0")" && pwd)
cache=${SIPEDGE_DEB_CACHE:-/var/cache/sipedge-debs}/$arch
python=${PYTHON:-python3}

case $arch in
amd64) ;;
arm64)
	# Maintainer scripts run under qemu-user: binfmt_misc must be mounted and enabled.
	if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
		mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
	fi
	if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
		update-binfmts --enable qemu-aarch64
	fi
	;;
*) echo "mkbase.sh: unsupported ARCH $arch" >&2; exit 2 ;;
esac

if [ -n "${SIPEDGE_APT_SOURCES:-}" ]; then
	set -- "$SIPEDGE_APT_SOURCES"
elif [ -f /etc/apt/sources.list.d/debian.sources ]; then
	set -- /etc/apt/sources.list.d/debian.sources
else
	set -- "deb http://deb.debian.org/debian bookworm main" \
		"deb http://deb.debian.org/debian bookworm-updates main" \
		"deb http://deb.debian.org/debian-security bookworm-security main"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Dummy package: satisfies linux-image's "initramfs-tools | linux-initramfs-tool".
mkdir -p "$work/noinitramfs/DEBIAN"
cat >"$work/noinitramfs/DEBIAN/control" <<CTRL
Package: sipedge-no-initramfs
Version: 1.0
Architecture: all
Provides: linux-initramfs-tool
Maintainer: sipedge firmware <firmware@sipedge.invalid>
Description: placeholder; the sipedge image builds its initrd on the host
CTRL
dpkg-deb --root-owner-group -b "$work/noinitramfs" "$work/sipedge-no-initramfs.deb" >/dev/null

# Pulled in by linux-image's helper scripts, not needed on a read-only appliance (about 55 MB).
PURGE="perl perl-modules-5.36 libperl5.36 libfile-find-rule-perl libnumber-compare-perl libtext-glob-perl"

pkgs=$(sed -e 's/#.*//' -e "s/@ARCH@/$arch/" "$here/debian-packages.txt" | tr -s ' \n' ',,' | sed 's/^,//; s/,$//')

mkdir -p "$cache"
rm -rf "$dest.tmp"
mkdir -p "${dest%/*}"
mmdebstrap --mode=root --variant=minbase --architectures="$arch" \
	--aptopt='APT::Install-Recommends "false"' \
	--dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-include=/usr/share/doc/*/copyright' \
	--dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/info/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	--dpkgopt='path-exclude=/usr/share/lintian/*' \
	--include="$pkgs" \
	--skip=download/empty --skip=essential/unlink \
	--setup-hook='mkdir -p "$1/var/cache/apt/archives"' \
	--essential-hook="cp $work/sipedge-no-initramfs.deb \"\$1/tmp/\"" \
	--essential-hook='chroot "$1" dpkg -i /tmp/sipedge-no-initramfs.deb && rm "$1/tmp/sipedge-no-initramfs.deb"' \
	--setup-hook="sync-in $cache /var/cache/apt/archives/" \
	--customize-hook="sync-out /var/cache/apt/archives $cache" \
	--customize-hook="chroot \"\$1\" dpkg --purge --force-depends $PURGE" \
	--customize-hook="$python $here/slim.py \"\$1\"" \
	--customize-hook='for k in "$1"/usr/lib/modules/*; do chroot "$1" depmod -a "${k##*/}"; done' \
	bookworm "$dest.tmp" "$@"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
