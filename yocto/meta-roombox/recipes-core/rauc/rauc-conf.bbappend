# system.conf per board (files/<MACHINE>/system.conf, picked by FILESOVERRIDES); the keyring is
# the release CA certificate from the build environment, never a file of this layer.
FILESEXTRAPATHS:prepend:roombox := "${THISDIR}/files:"
RAUC_KEYRING_FILE:roombox = "${ROOMBOX_RAUC_KEY_DIR}/roombox-ca.cert.pem"
