SUMMARY = "U-Boot boot script: A/B slot choice with boot counting for RAUC"
DESCRIPTION = "boot.scr tries the slots in BOOT_ORDER, each at most BOOT_x_LEFT times; RAUC's \
               uboot backend sets these variables (install: the new slot first with 3 tries; mark-good: tries reset)."
HOMEPAGE = "https://example.invalid/roombox"
SECTION = "bootloaders"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

DEPENDS = "u-boot-mkimage-native"

SRC_URI = "file://boot.cmd.in"

inherit deploy nopackages

ROOMBOX_ROOT_DISK ?= "/dev/mmcblk0p"
ROOMBOX_KERNEL_IMAGE ?= "Image"
ROOMBOX_BOOT_DEV ?= "mmc 0"

do_compile() {
    sed -e 's|@@ROOT_DISK@@|${ROOMBOX_ROOT_DISK}|g' \
        -e 's|@@KERNEL_IMAGE@@|${ROOMBOX_KERNEL_IMAGE}|g' \
        -e 's|@@BOOT_DEV@@|${ROOMBOX_BOOT_DEV}|g' \
        ${UNPACKDIR}/boot.cmd.in > ${B}/boot.cmd
    mkimage -A ${UBOOT_ARCH} -T script -C none -n "roombox A/B boot" -d ${B}/boot.cmd ${B}/boot.scr
}

do_deploy() {
    install -m 0644 ${B}/boot.scr ${DEPLOYDIR}/boot.scr
}
addtask deploy after do_compile before do_build
