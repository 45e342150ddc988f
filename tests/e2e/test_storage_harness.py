"""The storage stacks of harness.stacks, proven without kdump-agent: a file written into
each stack's file system when it is made comes back byte for byte on the host after a
read-back boot, a degraded array included; and one image reached through two SCSI paths
shows the same WWID and the same bytes on both.

If these fail, the e2e cases that dump to LVM, md RAID or multipath fail for the harness's
reason, not the agent's.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from harness import stacks, toolguest
from harness.disks import extract
from harness.kernels import Kernel

PROOF = "/proof.txt"
PROOF_TEXT = "written in the preparatory boot, read on the host\n"
POPULATE = f"printf '{PROOF_TEXT}' > /mnt{PROOF}".replace("\n", "\\n")

Preset = Callable[[Kernel, Path], stacks.Stack]


def _md(level: int) -> Preset:
    return lambda kernel, workdir: stacks.md_raid(kernel, workdir, level, populate=POPULATE)


def _plain(preset: Callable[..., stacks.Stack]) -> Preset:
    return lambda kernel, workdir: preset(kernel, workdir, populate=POPULATE)


# (preset, disks left out when reading back): every redundant stack is read degraded once.
CASES: dict[str, tuple[Preset, Sequence[int]]] = {
    "lvm-linear": (_plain(stacks.lvm_linear), ()),
    "md-raid1": (_md(1), ()),
    "md-raid1-degraded": (_md(1), (0,)),
    "lvm-thin": (_plain(stacks.lvm_thin), ()),
    "lvm-raid1-degraded": (_plain(stacks.lvm_raid1), (1,)),
    "md-raid5-degraded": (_md(5), (1,)),
    "md-raid10-degraded": (_md(10), (0,)),
    "lvm-on-md-degraded": (_plain(stacks.lvm_on_md), (0,)),
    "lvm-on-partition": (_plain(stacks.lvm_on_partition), ()),
}


def _identity(image: Path) -> dict[str, str]:
    """blkid's view of the file system on an image: TYPE, UUID, LABEL, ..."""
    out = subprocess.run(["blkid", "-p", "-o", "export", str(image)], check=True,
                         capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.mark.qemu
@pytest.mark.parametrize("case", list(CASES))
def test_stack_reads_back_on_the_host(case: str, kernel: Kernel, tmp_path: Path,
                                      console_logs: list[Path]) -> None:
    preset, leave_out = CASES[case]
    stack = preset(kernel, tmp_path)
    out = tmp_path / "fs.img"
    console_logs.append(out.with_name(out.name + ".console.log"))

    stacks.read_stack(kernel, stack, out, leave_out=leave_out)

    identity = _identity(out)
    assert (identity.get("TYPE"), identity.get("UUID"), identity.get("LABEL")) == (
        "ext4", stack.uuid, stack.label)
    assert extract(out, PROOF, tmp_path / "proof.txt").read_text() == PROOF_TEXT


def _head(image: Path) -> bytes:
    with open(image, "rb") as fd:
        return fd.read(1 << 20)


@pytest.mark.qemu
def test_each_caller_gets_its_own_sparse_copy(kernel: Kernel, tmp_path: Path) -> None:
    (first,) = stacks.lvm_linear(kernel, tmp_path / "a", populate=POPULATE).disks
    (second,) = stacks.lvm_linear(kernel, tmp_path / "b", populate=POPULATE).disks
    assert second.stat().st_blocks * 512 < second.stat().st_size / 10
    original = _head(second)
    with open(first, "r+b") as fd:
        fd.write(b"\xff" * (1 << 20))  # what a dump into the first copy would do
    (third,) = stacks.lvm_linear(kernel, tmp_path / "c", populate=POPULATE).disks
    assert _head(third) == original


@pytest.mark.qemu
def test_a_failing_script_fails_the_caller_with_the_console(kernel: Kernel,
                                                            tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"(?s)no STACK-OK.*last-words-before.*STACK-FAILED"):
        toolguest.run_script(kernel, "echo last-words-before\nfalse\necho never\n", disks=[],
                             log_path=tmp_path / "failing.log")


# Two LUNs, two paths each: on the blank one a GPT and ext4 are made through one path and
# read through the other and through a dm multipath map over both; the one multipath_lun
# made is read through its map.
_MULTIPATH_PROOF = """\
paths_of() {{
    for d in /sys/block/sd*; do
        if [ "$(cat $d/device/wwid)" = "$1" ]; then echo "${{d##*/}}"; fi
    done
}}
map() {{
    set -- "$1" $(paths_of "$2")
    dmsetup create "$1" --table "0 $(blockdev --getsz /dev/$2) multipath 0 0 1 1 \
round-robin 0 2 1 $(cat /sys/block/$2/dev) 1 $(cat /sys/block/$3/dev) 1"
}}
for d in /sys/block/sd*; do echo "MPATH-PATH ${{d##*/}} $(cat $d/device/wwid)"; done
set -- $(paths_of {blank.sysfs_wwid})
echo 'type=linux' | sfdisk -q -X gpt /dev/$1
mkfs.ext4 -q -F -b 4096 -U {uuid} -L mpath /dev/${{1}}1
mount -t ext4 /dev/${{1}}1 /mnt
printf '{text}' > /mnt{proof}
umount /mnt
blockdev --rereadpt /dev/$2
echo "MPATH-OTHER-PATH $(blkid -p -o value -s UUID /dev/${{2}}1)"
mount -t ext4 -o ro /dev/${{2}}1 /mnt
echo "MPATH-READ $(cat /mnt{proof})"
umount /mnt
map {blank.map_wwid} {blank.sysfs_wwid}
table=$(blkid -p -o value -s PTTYPE /dev/mapper/{blank.map_wwid})
echo "MPATH-MAP $(dmsetup status {blank.map_wwid}) $table"
dmsetup remove {blank.map_wwid}
map {made.map_wwid} {made.sysfs_wwid}
mount -t ext4 -o ro {device} /mnt
echo "MPATH-LUN $(blkid -p -o value -s UUID {device}) $(cat /mnt{proof})"
umount /mnt
dmsetup remove {made.map_wwid}
"""


@pytest.mark.qemu
def test_one_image_through_two_scsi_paths(kernel: Kernel, tmp_path: Path,
                                          console_logs: list[Path]) -> None:
    blank = stacks.multipath_disk(tmp_path / "lun.img", 128)
    stack, made = stacks.multipath_lun(kernel, tmp_path, populate=POPULATE,
                                       wwn="0x5000c500a1b2c3e5", serial="KDUMPMPATH2")
    log_path = tmp_path / "multipath.log"
    console_logs.append(log_path)
    uuid = "0d5e3a4c-7b21-4f6e-8a90-1c2d3e4f5a6b"
    script = _MULTIPATH_PROOF.format(blank=blank, made=made, device=stack.device, uuid=uuid,
                                     proof=PROOF, text=PROOF_TEXT.replace("\n", "\\n"))

    result = toolguest.run_script(kernel, script, disks=[], log_path=log_path,
                                  wait_for=stacks.scsi_paths(2),
                                  extra_args=[*blank.qemu_args(), *made.qemu_args()])

    lines = result.console.splitlines()
    wwids = sorted(line.split()[2] for line in lines if line.startswith("MPATH-PATH "))
    assert wwids == sorted([blank.sysfs_wwid, made.sysfs_wwid] * 2), lines
    assert f"MPATH-OTHER-PATH {uuid}" in lines
    assert f"MPATH-READ {PROOF_TEXT.strip()}" in lines
    (mapped,) = [line for line in lines if line.startswith("MPATH-MAP ")]
    # the map over both paths, each Active, shows the partition table written through one
    assert len(re.findall(r" \d+:\d+ A ", mapped)) == 2 and mapped.endswith(" gpt"), mapped
    assert f"MPATH-LUN {stack.uuid} {PROOF_TEXT.strip()}" in lines
    partition = stacks.extract_partition(blank.image, 1, tmp_path / "part1.img")
    assert _identity(partition)["UUID"] == uuid
    assert extract(partition, PROOF, tmp_path / "proof.txt").read_text() == PROOF_TEXT
