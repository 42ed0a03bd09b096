# U-Boot boot script of the Raspberry Pi 4 image (compiled to boot.scr on the FAT partition).
# A/B slot choice with RAUC's U-Boot integration: the environment (uboot.env on the FAT,
# CONFIG_ENV_IS_IN_FAT) holds BOOT_ORDER ("A B", the preferred slot first; rauc
# set-primary puts a new slot first) and BOOT_A_LEFT / BOOT_B_LEFT, the tries a slot has
# left. Every boot spends one try of the slot it boots; `rauc status mark-good` (run by the
# supervisor after [update] mark_good_after_s of proxy health) refills them. A slot with no
# tries left is skipped: the next slot in BOOT_ORDER boots, the old one (rollback).
# The kernel comes from the booted slot (/boot of its ext4), so a rollback returns to the old
# kernel too. The device tree is the one the Pi firmware passes at ${fdt_addr}: it has
# config.txt's overlays applied (uart2 for the management console, disable-bt), which a
# device tree loaded from the slot would lose.
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
	echo "sipedge-boot: no slot has tries left; refilling them and resetting"
	setenv BOOT_A_LEFT 3
	setenv BOOT_B_LEFT 3
	saveenv
	reset
fi
saveenv
echo "sipedge-boot: slot ${raucslot} (order ${BOOT_ORDER}, A_LEFT=${BOOT_A_LEFT} B_LEFT=${BOOT_B_LEFT})"
load mmc 0:${bootpart} ${kernel_addr_r} /boot/Image
setenv bootargs "root=/dev/mmcblk0p${bootpart} rootfstype=ext4 ro rootwait console=ttyAMA0,115200 rauc.slot=${raucslot} panic=10"
booti ${kernel_addr_r} - ${fdt_addr}
# booti returns only when the slot's kernel cannot be started: the try is already spent,
# so reset and let the counting above move on (a kernel that panics reboots: panic=10)
echo "sipedge-boot: slot ${raucslot} cannot be booted; resetting"
reset
