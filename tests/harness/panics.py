"""Real panics other than sysrq-c that a busybox first kernel can cause without a test
module (the Debian cloud kernel ships no lkdtm): each is a `panic_initrd.Trigger`.

- HUNG_TASK: an ext2 file system on a loop device is frozen (`fsfreeze --freeze`) and a shell
  writes to it: the writer sleeps uninterruptibly in sb_start_write, and with
  hung_task_timeout_secs=1 and hung_task_panic=1 khungtaskd panics within seconds.
- OUT_OF_MEMORY: panic_on_oom=1 and a tmpfs larger than RAM filled from /dev/zero: tmpfs
  pages cannot be reclaimed without swap, so the first OOM panics.
- INIT_EXITS: /init exits, which the kernel answers with "Attempted to kill init!".
"""

from __future__ import annotations

from .panic_initrd import SYSRQ_CRASH, Trigger

HUNG_TASK = Trigger("hung-task", """\
sysctl -w kernel.hung_task_panic=1
sysctl -w kernel.hung_task_timeout_secs=1
dd if=/dev/zero of=/tmp/frozen.img bs=1M count=8 2>/dev/null
losetup /dev/loop0 /tmp/frozen.img
mke2fs -q /dev/loop0
mount -t ext4 /dev/loop0 /mnt
fsfreeze --freeze /mnt
echo stuck > /mnt/file &
sleep 60""", modules=("loop",))

OUT_OF_MEMORY = Trigger("out-of-memory", """\
sysctl -w vm.panic_on_oom=1
mount -t tmpfs -o size=8g fill /mnt
dd if=/dev/zero of=/mnt/fill bs=1M
sleep 60""")

INIT_EXITS = Trigger("init-exits", "exit 3")

ALL = (SYSRQ_CRASH, HUNG_TASK, OUT_OF_MEMORY, INIT_EXITS)
