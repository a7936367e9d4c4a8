SUMMARY = "roombox base: /data, the /etc/roombox overlay, RAUC access"
DESCRIPTION = "Mounts the data partition at /data, puts a writable overlay (upper layer on /data) \
               over /etc/roombox of the read-only rootfs, and lets roomboxd ask RAUC to install bundles."
HOMEPAGE = "https://example.invalid/roombox"
SECTION = "base"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

SRC_URI = "file://data.mount \
           file://roombox-rauc-dbus.conf"

inherit systemd overlayfs

# oe-core's overlayfs class: /etc/roombox stays read-only in the image and gets an upper layer
# on the data partition at boot (etc-roombox.mount, after data.mount).
OVERLAYFS_MOUNT_POINT[data] = "/data"
OVERLAYFS_WRITABLE_PATHS[data] = "/etc/roombox"
OVERLAYFS_QA_SKIP[data] = "mount-configured"

SYSTEMD_SERVICE:${PN} = "data.mount"

do_install() {
    install -d ${D}${systemd_system_unitdir} ${D}${datadir}/dbus-1/system.d ${D}/data
    install -m 0644 ${UNPACKDIR}/data.mount ${D}${systemd_system_unitdir}/data.mount
    install -m 0644 ${UNPACKDIR}/roombox-rauc-dbus.conf ${D}${datadir}/dbus-1/system.d/roombox-rauc.conf
}

FILES:${PN} += "/data ${systemd_system_unitdir}/data.mount ${datadir}/dbus-1/system.d/roombox-rauc.conf"
RDEPENDS:${PN} = "e2fsprogs-e2fsck"
