SUMMARY = "roombox update bundle (RAUC, verity, signed)"
DESCRIPTION = "The rootfs of roombox-image as a signed RAUC bundle. The key and certificate come \
               from the build environment (ROOMBOX_RAUC_KEY_DIR), never from this layer."
HOMEPAGE = "https://example.invalid/roombox"
SECTION = "base"
LICENSE = "MIT"

# A bundle is made from images (RAUC_SLOT_*), not from sources.
SRC_URI = ""

inherit bundle

RAUC_BUNDLE_COMPATIBLE = "roombox-${MACHINE}"
RAUC_BUNDLE_VERSION = "${DISTRO_VERSION}"
RAUC_BUNDLE_FORMAT = "verity"
RAUC_BUNDLE_SLOTS = "rootfs"
RAUC_SLOT_rootfs = "roombox-image"
RAUC_SLOT_rootfs[fstype] = "ext4"

# Keys from the build environment: kas passes ROOMBOX_RAUC_KEY_DIR through (kas/common.yml).
RAUC_KEY_FILE = "${ROOMBOX_RAUC_KEY_DIR}/roombox-release.key.pem"
RAUC_CERT_FILE = "${ROOMBOX_RAUC_KEY_DIR}/roombox-release.cert.pem"
