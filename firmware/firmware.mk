# Firmware targets, included by the top-level Makefile (-include firmware/firmware.mk).
# docs/operations.md explains them.
#
#   make image BOARD=raspberrypi4_64     Buildroot image (needs internet; not on the CI machine)
#   make image-qemu [ARCH=amd64|arm64]   offline Debian-based image in out/image-ARCH/bin
#   make vm-run [ARCH=amd64]             boot that image with the console on this terminal
#   make test-system                     system tests (amd64 guest)
#   make test-arm64                      the arm64 guest tests: smoke (also in make test) + U-Boot A/B update, power cut, rollbacks
#   make check-firmware                  static check of firmware/ and board/ (seconds)
#   make check-buildroot                 the pinned Buildroot's own tools on firmware/ (minutes)
#   make bundle BOARD=raspberrypi4_64    signed RAUC bundle of the Buildroot image's rootfs
#   make bundle-qemu [ARCH=amd64|arm64]  signed RAUC bundle of the offline image's slot A
#   make test-ota                        the slow A/B guest tests (rollback, kernel panic, power cut)

include firmware/buildroot.mk

BOARD ?= raspberrypi4_64
ARCH ?= amd64
BR_SRC ?= out/buildroot-$(BUILDROOT_VERSION)
BR_OUT ?= out/br-$(BOARD)
BR2_DL_DIR ?= $(CURDIR)/out/dl
FW_PYTEST = $(VPY) -m pytest -c tests/pytest.ini

.PHONY: bundle bundle-qemu test-ota image buildroot-source image-qemu vm-run test-system test-arm64 check-firmware check-buildroot

# Fetch the pinned Buildroot and check that the tag still points at the pinned commit.
$(BR_SRC)/Makefile:
	rm -rf $(BR_SRC).tmp
	git clone --quiet --depth 1 --branch $(BUILDROOT_VERSION) $(BUILDROOT_GIT_URL) $(BR_SRC).tmp
	test "$$(git -C $(BR_SRC).tmp rev-parse HEAD)" = "$(BUILDROOT_COMMIT)" || \
	  { echo "Buildroot $(BUILDROOT_VERSION) is not commit $(BUILDROOT_COMMIT)" >&2; exit 1; }
	mv $(BR_SRC).tmp $(BR_SRC)

buildroot-source: $(BR_SRC)/Makefile

image: $(BR_SRC)/Makefile
	$(PYTHON) tools/release/release.py keys >/dev/null
	@test -f firmware/configs/sipedge_$(BOARD)_defconfig || \
	  { echo "no firmware/configs/sipedge_$(BOARD)_defconfig" >&2; exit 2; }
	$(MAKE) -C $(BR_SRC) BR2_EXTERNAL=$(CURDIR)/firmware O=$(CURDIR)/$(BR_OUT) \
	  BR2_DL_DIR=$(BR2_DL_DIR) sipedge_$(BOARD)_defconfig
	$(MAKE) -C $(BR_SRC) O=$(CURDIR)/$(BR_OUT) BR2_DL_DIR=$(BR2_DL_DIR)
	@ls -l $(BR_OUT)/images/*.img

image-qemu:
	$(PYTHON) tools/image/mkimage.py --arch $(ARCH) --compress

vm-run: image-qemu
	$(PYTHON) tools/vm/run --arch $(ARCH)

test-system: test-deps
	$(FW_PYTEST) tests/system $(PYTEST_ARGS)

test-arm64: test-deps
	SIPEDGE_TEST_ARM64=1 $(FW_PYTEST) tests/system/test_arm64.py tests/system/test_ota_arm64.py $(PYTEST_ARGS)

check-firmware: venv
	$(FW_PYTEST) tests/unit/test_firmware_static.py $(PYTEST_ARGS)

check-buildroot: test-deps
	$(FW_PYTEST) tests/firmware $(PYTEST_ARGS)

# Signed RAUC bundles (tools/release/release.py; keys: tools/release/dev-keys or
# SIPEDGE_RELEASE_KEYS). VERSION defaults to the project version + a UTC build id.
bundle:
	$(PYTHON) tools/release/release.py bundle --board $(BOARD) \
	  --rootfs $(BR_OUT)/images/rootfs.ext4 $(if $(VERSION),--version $(VERSION)) \
	  --out $(BR_OUT)/images/sipedge-$(BOARD).raucb

bundle-qemu: image-qemu
	$(PYTHON) tools/release/release.py bundle-qemu --arch $(ARCH) $(if $(VERSION),--version $(VERSION))

test-ota: test-deps
	SIPEDGE_TEST_OTA_LONG=1 $(FW_PYTEST) tests/system/test_ota_guest.py $(PYTEST_ARGS)
