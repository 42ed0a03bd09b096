# U-Boot boot script of the arm64 QEMU image (Debian's u-boot-qemu, qemu_arm64, started
# with -bios; compiled to boot.scr on the FAT partition by tools/image/mkimage.py).
# A/B slot choice with RAUC's U-Boot integration, as on the Raspberry Pi (boot.cmd there):
# BOOT_ORDER and BOOT_A_LEFT / BOOT_B_LEFT. This U-Boot keeps its own environment in flash,
# which Linux cannot see, so the A/B variables live in uboot.env on the FAT partition
# (the format of fw_setenv, /etc/fw_env.config): imported here, counted, written back.
# Kernel and initrd come from the booted slot; the device tree is QEMU's.
setenv envaddr 0x48000000
if load virtio 0:1 ${envaddr} uboot.env; then
	env import -c ${envaddr} 0x4000 BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT sipedge_extra
fi
test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 3
setenv bootpart
setenv raucslot
for BOOT_SLOT in ${BOOT_ORDER}; do
	if test -n "${bootpart}"; then
		true
	elif test "${BOOT_SLOT}" = "A"; then
		if test ${BOOT_A_LEFT} -gt 0; then
			setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
			setenv bootpart 2
			setenv raucslot A
		fi
	elif test "${BOOT_SLOT}" = "B"; then
		if test ${BOOT_B_LEFT} -gt 0; then
			setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
			setenv bootpart 3
			setenv raucslot B
		fi
	fi
done
if test -z "${bootpart}"; then
	echo "sipedge-boot: no slot has tries left; booting A without counting"
	setenv bootpart 2
	setenv raucslot A
else
	env export -c -s 0x4000 ${envaddr} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT sipedge_extra
	fatwrite virtio 0:1 ${envaddr} uboot.env 0x4000
fi
echo "sipedge-boot: slot ${raucslot} (order ${BOOT_ORDER}, A_LEFT=${BOOT_A_LEFT} B_LEFT=${BOOT_B_LEFT})"
load virtio 0:${bootpart} ${kernel_addr_r} /usr/lib/sipedge/boot/Image
load virtio 0:${bootpart} ${ramdisk_addr_r} /usr/lib/sipedge/boot/initrd.img
setenv bootargs "root=PARTUUID=@SIG@-0${bootpart} rootfstype=ext4 ro console=@CONSOLE@ rauc.slot=${raucslot} panic=10 ${sipedge_extra}"
booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdtcontroladdr}
# booti returns only when the slot's kernel cannot be started: the try is already spent,
# so reset and let the counting above move on (a kernel that panics reboots: panic=10)
echo "sipedge-boot: slot ${raucslot} cannot be booted; resetting"
reset
