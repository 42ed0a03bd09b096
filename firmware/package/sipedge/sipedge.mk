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
SIPEDGE_LICENSE = Proprietary
SIPEDGE_LICENSE_FILES =

$(eval $(python-package))
