# Where U-Boot keeps its environment on each board (files/<MACHINE>/fw_env.config), for RAUC's
# uboot backend: fw_setenv writes BOOT_ORDER / BOOT_x_LEFT, which boot.scr reads.
FILESEXTRAPATHS:prepend:roombox := "${THISDIR}/files:"
SRC_URI:append:roombox = " file://fw_env.config"

do_install:append:roombox() {
    install -d ${D}${sysconfdir}
    install -m 0644 ${UNPACKDIR}/fw_env.config ${D}${sysconfdir}/fw_env.config
}
