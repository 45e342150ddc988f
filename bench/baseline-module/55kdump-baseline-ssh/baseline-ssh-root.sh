#!/bin/sh
# No root file system to wait for in the capture kernel (as kdump-agent's module does).
if [ -e /proc/vmcore ]; then
    root=kdump-baseline
    rootok=1
fi
