#!/bin/sh
# cmdline hook: in the capture kernel there is no root file system to wait for. The agent
# runs at pre-mount and ends the boot itself, so tell dracut's init the root is handled.
if [ -e /proc/vmcore ]; then
    root=kdump-agent
    rootok=1
fi
