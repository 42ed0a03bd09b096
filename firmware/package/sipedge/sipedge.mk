################################################################################
#
# sipedge
#
################################################################################

# Built from the app/ directory of this repository (no download, hence no hash).
SIPEDGE_VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' $(BR2_EXTERNAL_SIPEDGE_PATH)/../app/sipedge/__init__.py)
SIPEDGE_SITE = $(BR2_EXTERNAL_SIPEDGE_PATH)/../app
SIPEDGE_SITE_METHOD = local
SIPEDGE_SETUP_TYPE = setuptools
# The compiled build (app/setup.py): the hot sans-IO modules of sipedge/compiled.py become C
# extension modules for the target, built by host Cython and the cross compiler. With
# SIPEDGE_BUILD=compiled a module that does not compile fails the build instead of
# silently shipping pure Python.
SIPEDGE_DEPENDENCIES = host-python-cython
SIPEDGE_ENV = SIPEDGE_BUILD=compiled
SIPEDGE_LICENSE = Proprietary
SIPEDGE_LICENSE_FILES =

$(eval $(python-package))
