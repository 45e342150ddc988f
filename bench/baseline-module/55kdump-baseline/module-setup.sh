#!/bin/bash
# The benchmark's baseline: a lean dracut capture image (dracut's base module, the target's
# drivers, makedumpfile) whose hook saves the dump with a shell script and no agent.

check() {
    return 255
}

depends() {
    echo base
    return 0
}

install() {
    inst_multiple makedumpfile sync date
    inst_hook cmdline 95 "$moddir/baseline-root.sh"
    inst_hook pre-mount 01 "$moddir/baseline-capture.sh"
}
