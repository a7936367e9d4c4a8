SUMMARY = "roombox kiosk: the room display (/display) full screen on HDMI"
DESCRIPTION = "Runs cog (WPE WebKit) on the DRM/KMS output, showing roomboxd's /display page: \
               who is in the meeting, the join link and the room's state."
HOMEPAGE = "https://example.invalid/roombox"
SECTION = "graphics"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

SRC_URI = "file://roombox-kiosk.service"

inherit systemd useradd features_check

REQUIRED_DISTRO_FEATURES = "systemd opengl"

USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system --gid 851 roombox-kiosk"
USERADD_PARAM:${PN} = "--system --uid 851 --gid roombox-kiosk --groups video,input,render \
                       --home-dir /run/roombox-kiosk --no-create-home --shell /sbin/nologin roombox-kiosk"

SYSTEMD_SERVICE:${PN} = "roombox-kiosk.service"

do_install() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${UNPACKDIR}/roombox-kiosk.service ${D}${systemd_system_unitdir}/roombox-kiosk.service
}

RDEPENDS:${PN} = "cog wpewebkit"
