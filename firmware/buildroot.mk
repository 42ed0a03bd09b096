# The pinned Buildroot: the only place its version lives (firmware/firmware.mk includes it).
# firmware/buildroot-packages.tsv records the BR2_PACKAGE_* symbols of exactly this tree.
BUILDROOT_VERSION = 2026.02.3
BUILDROOT_COMMIT = 679b9ead7620bbf193620d1ebf56f53c1764d37a
BUILDROOT_GIT_URL = https://gitlab.com/buildroot.org/buildroot.git
