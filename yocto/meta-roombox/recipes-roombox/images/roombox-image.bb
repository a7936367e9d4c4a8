SUMMARY = "roombox appliance image"
DESCRIPTION = "Read-only rootfs with roomboxd, the HDMI kiosk and RAUC; data on /data; \
               two rootfs slots (A/B) per the board's wks file."
HOMEPAGE = "https://example.invalid/roombox"
SECTION = "image"
LICENSE = "MIT"

inherit core-image

IMAGE_FEATURES += "read-only-rootfs"
# kernel-image: the kernel lives in each slot's /boot (boot.cmd loads it from the chosen slot).
# libubootenv-bin: fw_setenv for RAUC's uboot backend (recipes-bsp/libubootenv: where the env is).
IMAGE_INSTALL:append = " roomboxd roombox-base rauc libubootenv-bin kernel-image ${ROOMBOX_KIOSK}"
EXTRA_IMAGEDEPENDS += "roombox-boot-script"
# The kiosk needs a display; qemuarm64 builds leave it out (ROOMBOX_KIOSK = "").
ROOMBOX_KIOSK ?= "roombox-kiosk"

IMAGE_FSTYPES = "ext4 wic.bz2 wic.bmap"
WKS_FILE ?= "roombox-${MACHINE}.wks"
IMAGE_ROOTFS_EXTRA_SPACE = "0"
# One slot's size: the rootfs must fit (wks files use --fixed-size 1024M).
IMAGE_ROOTFS_MAXSIZE = "1000000"
