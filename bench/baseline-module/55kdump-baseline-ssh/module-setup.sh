#!/bin/bash
# The benchmark's SSH baseline: the lean image of 55kdump-baseline, plus what a shell script
# needs to send the dump through OpenSSH: ip, busybox's udhcpc, ssh. The server, the key and
# the pinned host key are laid over the image by the bench (/etc/baseline-ssh/), so one
# build serves any run's sshd.

check() {
    return 255
}

depends() {
    echo base
    return 0
}

install() {
    inst_multiple makedumpfile sync date ip ssh busybox
    inst_simple "$moddir/udhcpc.script" /usr/lib/baseline-ssh/udhcpc.script
    chmod 0755 "${initdir}/usr/lib/baseline-ssh/udhcpc.script"
    inst_hook cmdline 95 "$moddir/baseline-ssh-root.sh"
    inst_hook pre-mount 01 "$moddir/baseline-ssh-capture.sh"
}
