"""kdump.conf parsing against RHEL's kdump.conf(5) and kdumpctl's check_config (docs/design.md, section 5)."""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

import pytest

from kdump_agent.config import (
    DEFAULT_COLLECTOR,
    FILESYSTEM_TYPES,
    NOTICES,
    Action,
    Config,
    ConfigErrors,
    Notice,
    Target,
    TargetKind,
    load,
    parse,
    parse_bytes,
)
from kdump_agent.config_values import MAX_SECONDS
from kdump_agent.errors import ConfigError

DATA = Path(__file__).resolve().parent.parent / "data"
GOOD = sorted((DATA / "good").glob("*.conf"))
BAD = sorted((DATA / "bad").glob("*.conf"))
RHEL_TEMPLATES = [path for path in GOOD if path.name.startswith("rhel")]
EXPECT = re.compile(r"# expect: (\d+): (.+)")


def errors_of(text: str) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as caught:
        parse(text, "kdump.conf")
    return caught.value.errors


def only_error(text: str) -> tuple[int, str]:
    errors = errors_of(text)
    assert len(errors) == 1, [str(error) for error in errors]
    return errors[0].line, errors[0].message


# ---- valid files -------------------------------------------------------------------------

def test_parse_empty_file_gives_rhel_defaults() -> None:
    config = parse("", "/etc/kdump.conf")
    assert config == Config(source="/etc/kdump.conf")
    assert config.target is None and config.path == "/var/crash"
    assert config.core_collector == DEFAULT_COLLECTOR == ("makedumpfile", "-l", "--message-level", "7",
                                                          "-d", "31")
    assert config.failure_action is Action.REBOOT and config.final_action is Action.REBOOT


def test_parse_reads_every_directive() -> None:
    config = parse("""xfs LABEL=kdump
path /srv/crash
core_collector makedumpfile -c -d 17
failure_action halt
final_action poweroff
dracut_args --no-hostonly
extra_modules virtio_blk virtio_pci
extra_bins /usr/bin/lftp /usr/bin/curl
kdump_pre /usr/local/sbin/pre
kdump_post /usr/local/sbin/post
kdump_emergency /usr/local/sbin/emergency
link_delay 5
disk_timeout 30
debug_mem_level 2
sshkey /root/.ssh/other_key
force_rebuild 1
force_no_rebuild 0
fence_kdump_args -p 7410 -f auto
fence_kdump_nodes node1 node2
auto_reset_crashkernel no
""", "kdump.conf")
    assert config.target == Target(TargetKind.FILESYSTEM, "LABEL=kdump", "xfs", 1)
    assert config.path == "/srv/crash"
    assert config.core_collector == ("makedumpfile", "-c", "-d", "17")
    assert (config.failure_action, config.final_action) == (Action.HALT, Action.POWEROFF)
    assert config.dracut_args == ("--no-hostonly",)
    assert config.extra_modules == ("virtio_blk", "virtio_pci")
    assert config.extra_bins == ("/usr/bin/lftp", "/usr/bin/curl")
    assert (config.kdump_pre, config.kdump_post, config.kdump_emergency) == (
        "/usr/local/sbin/pre", "/usr/local/sbin/post", "/usr/local/sbin/emergency")
    assert (config.link_delay, config.disk_timeout, config.debug_mem_level) == (5, 30, 2)
    assert config.sshkey == "/root/.ssh/other_key"
    assert (config.force_rebuild, config.force_no_rebuild) == (True, False)
    assert config.fence_kdump_args == "-p 7410 -f auto"
    assert config.fence_kdump_nodes == ("node1", "node2")
    assert config.auto_reset_crashkernel is False


@pytest.mark.parametrize("fstype", [t for t in FILESYSTEM_TYPES if t != "virtiofs"])
@pytest.mark.parametrize("spec", ["/dev/vdb1", "/dev/mapper/vg-kdump", "UUID=0f3e5c1a-1b2c",
                                  "LABEL=/boot", "PARTUUID=1234-01", "PARTLABEL=kdump"])
def test_parse_filesystem_target(fstype: str, spec: str) -> None:
    config = parse(f"\n{fstype} {spec}\n", "kdump.conf")
    assert config.target == Target(TargetKind.FILESYSTEM, spec, fstype, 2)


def test_parse_virtiofs_target_takes_a_tag() -> None:
    assert parse("virtiofs myfs", "k").target == Target(TargetKind.FILESYSTEM, "myfs", "virtiofs", 1)


@pytest.mark.parametrize(("line", "target"), [
    ("raw /dev/vg/lv_kdump", Target(TargetKind.RAW, "/dev/vg/lv_kdump", None, 1)),
    ("nfs my.server.com:/export/tmp", Target(TargetKind.NFS, "my.server.com:/export/tmp", "nfs", 1)),
    ("nfs4 my.server.com:/export/tmp", Target(TargetKind.NFS, "my.server.com:/export/tmp", "nfs4", 1)),
    ("nfs [2001:db8::1:2:3:4]:/export/tmp",
     Target(TargetKind.NFS, "[2001:db8::1:2:3:4]:/export/tmp", "nfs", 1)),
    ("ssh user@my.server.com", Target(TargetKind.SSH, "user@my.server.com", None, 1)),
    ("ssh user@2001:db8::1:2:3:4", Target(TargetKind.SSH, "user@2001:db8::1:2:3:4", None, 1)),
])
def test_parse_network_and_raw_targets(line: str, target: Target) -> None:
    assert parse(line, "kdump.conf").target == target


def test_parse_net_with_an_export_means_nfs() -> None:
    config = parse("net my.server.com:/export/tmp", "k")
    assert config.target == Target(TargetKind.NFS, "my.server.com:/export/tmp", "nfs", 1)


def test_parse_net_with_a_user_means_ssh() -> None:
    assert parse("net user@my.server.com", "k").target == Target(TargetKind.SSH, "user@my.server.com",
                                                                 None, 1)


def test_parse_strips_comment_after_value() -> None:
    config = parse("path /var/crash# where it goes\ncore_collector cp --sparse=always #fast", "k")
    assert config.path == "/var/crash"
    assert config.core_collector == ("cp", "--sparse=always")


@pytest.mark.parametrize("quoted", ['"/var/crash"', "'/var/crash'"])
def test_parse_removes_one_pair_of_wrapping_quotes(quoted: str) -> None:
    assert parse(f"path {quoted}", "k").path == "/var/crash"


def test_parse_core_collector_wrapped_in_quotes_as_in_the_man_page() -> None:
    config = parse('core_collector "makedumpfile -l --message-level 1 -d 31"', "k")
    assert config.core_collector == ("makedumpfile", "-l", "--message-level", "1", "-d", "31")


def test_parse_leaves_quotes_that_do_not_wrap_the_whole_value() -> None:
    assert parse("""dracut_args "--add" 'b c'""", "k").dracut_args == ("--add", "b c")


def test_parse_splits_dracut_args_like_a_shell() -> None:
    config = parse('dracut_args --no-hostonly --drivers "virtio_blk virtio_pci"', "k")
    assert config.dracut_args == ("--no-hostonly", "--drivers", "virtio_blk virtio_pci")


def test_parse_accepts_tabs_runs_of_blanks_and_crlf() -> None:
    config = parse("  \text4\t \t/dev/vdb1 \r\n\tpath   /var/crash\t\r\nextra_modules  a\t\tb  \r\n", "k")
    assert config.target == Target(TargetKind.FILESYSTEM, "/dev/vdb1", "ext4", 1)
    assert config.path == "/var/crash"
    assert config.extra_modules == ("a", "b")


def test_parse_accepts_the_seed_default_spelling() -> None:
    assert parse("default shell", "k").failure_action is Action.SHELL


@pytest.mark.parametrize("action", list(Action))
@pytest.mark.parametrize("directive", ["default", "failure_action"])
def test_parse_failure_action_takes_every_action(directive: str, action: Action) -> None:
    assert parse(f"{directive} {action.value}", "k").failure_action is action


def test_parse_accepts_a_collector_given_by_absolute_path() -> None:
    assert parse("core_collector /usr/sbin/makedumpfile -l", "k").core_collector == (
        "/usr/sbin/makedumpfile", "-l")


def test_config_is_frozen() -> None:
    config = parse("", "k")
    with pytest.raises(AttributeError):
        config.path = "/tmp"  # type: ignore[misc]


# ---- errors ------------------------------------------------------------------------------

def test_parse_rejects_second_target() -> None:
    assert only_error("ext4 /dev/vdb1\npath /var/crash\nxfs /dev/vdc1\n") == (
        3, "more than one dump target (first at line 1)")


def test_parse_rejects_second_target_given_as_net() -> None:
    assert only_error("nfs a:/x\nnet b:/y") == (2, "more than one dump target (first at line 1)")


def test_parse_rejects_unknown_directive_with_a_suggestion() -> None:
    assert only_error("patth /var/crash") == (1, "unknown directive 'patth' (did you mean 'path'?)")


def test_parse_rejects_unknown_directive_without_a_close_match() -> None:
    line, message = only_error("zzz 1")
    assert (line, message) == (1, "unknown directive 'zzz' (see kdump.conf(5) for the directives)")


@pytest.mark.parametrize("directive", ["path", "sshkey", "core_collector", "final_action", "link_delay",
                                       "force_rebuild", "extra_modules", "fence_kdump_nodes"])
def test_parse_rejects_duplicated_directive(directive: str) -> None:
    value = {"path": "/a", "sshkey": "/k", "core_collector": "cat", "final_action": "halt",
             "link_delay": "1", "force_rebuild": "0", "extra_modules": "m", "fence_kdump_nodes": "n"}
    text = f"{directive} {value[directive]}\n# comment\n{directive} {value[directive]}\n"
    assert only_error(text) == (3, f"duplicated directive '{directive}' (first at line 1)")


def test_parse_rejects_default_and_failure_action_together() -> None:
    line, message = only_error("failure_action halt\ndefault reboot")
    assert line == 2 and "'default' and 'failure_action' (line 1) both set failure_action" in message


def test_parse_rejects_force_rebuild_and_force_no_rebuild_both_set() -> None:
    line, message = only_error("force_no_rebuild 1\npath /x\nforce_rebuild 1")
    assert line == 3 and "force_rebuild and force_no_rebuild cannot both be set" in message


def test_parse_allows_force_rebuild_with_force_no_rebuild_zero() -> None:
    assert parse("force_rebuild 1\nforce_no_rebuild 0", "k").force_rebuild


@pytest.mark.parametrize("directive", sorted({"raw", "nfs", "ssh", "net", "path", "core_collector", "default",
                                              "dracut_args", "kdump_post", "debug_mem_level", "ext4"}))
def test_parse_rejects_directive_without_value(directive: str) -> None:
    assert only_error(f"{directive}   # nothing") == (1, f"'{directive}' needs a value")


def test_parse_rejects_empty_quoted_value() -> None:
    assert only_error('path ""') == (1, "'path' needs a value")


@pytest.mark.parametrize(("text", "message"), [
    ("raw sda5", "raw target 'sda5' must be a device under /dev/"),
    ("raw /dev/", "raw target '/dev/' must be a device under /dev/"),
    ("nfs server", "NFS target 'server' must look like host:/export"),
    ("nfs :/export", "NFS target ':/export' must look like host:/export"),
    ("nfs 2001:db8::1:/x", "an IPv6 server goes in brackets"),
    ("nfs []:/x", "NFS target '[]:/x' must look like host:/export"),
    ("nfs [2001:db8::1]/x", "must look like host:/export"),
    ("ssh my.server.com", "SSH target 'my.server.com' must look like user@host"),
    ("ssh user@", "SSH target 'user@' must look like user@host"),
    ("ssh a@b@c", "SSH target 'a@b@c' must look like user@host"),
    ("net server", "cannot tell whether 'net server' is NFS (host:/export) or SSH (user@host)"),
    ("net user@server:/export", "write 'nfs ...' or 'ssh ...' instead"),
    ("ext4 sda3", "ext4 target 'sda3' must be a device under /dev/ or UUID=..., LABEL=..., PARTUUID=..."),
    ("xfs UUID=", "xfs target 'UUID=' must be a device under /dev/"),
    ("btrfs uuid=abc", "btrfs target 'uuid=abc' must be a device"),
    ("path var/crash", "'path' needs an absolute path, not 'var/crash' (start it with /)"),
    ("path /var/crash /tmp", "'path' takes one value, not 2 ('/var/crash /tmp')"),
    ("sshkey id_rsa", "'sshkey' needs an absolute path"),
    ("kdump_pre pre.sh", "'kdump_pre' needs an absolute path"),
    ("kdump_emergency ./e", "'kdump_emergency' needs an absolute path"),
    ("extra_bins /bin/a b c", "'extra_bins' needs absolute paths: b c"),
    ("core_collector gzip -c", "core_collector 'gzip' is not one of makedumpfile, cp, cat (e.g."),
    ("core_collector bin/makedumpfile", "core_collector 'bin/makedumpfile' is not one of"),
    ("core_collector /usr/bin/gzip", "core_collector '/usr/bin/gzip' is not one of"),
    ("core_collector makedumpfile 'unclosed", "cannot split the value of 'core_collector': No closing"),
    ("dracut_args --x 'a", "cannot split the value of 'dracut_args'"),
    ("default panic", ("'default' must be one of reboot, halt, poweroff, shell, mount_root_run_init, "
                       "dump_to_rootfs, not 'panic'")),
    ("failure_action Reboot", "'failure_action' must be one of"),
    ("final_action dump_to_rootfs", ("'final_action' must be one of reboot, halt, poweroff, not "
                                     "'dump_to_rootfs'")),
    ("link_delay -1", "'link_delay' must be a whole number of seconds"),
    ("disk_timeout 1.5", "'disk_timeout' must be a whole number of seconds"),
    ("disk_timeout ²", "'disk_timeout' must be a whole number of seconds"),
    ("disk_timeout 99999999999999999999", "(at most 9 digits)"),
    ("debug_mem_level 4", "'debug_mem_level' must be 0, 1, 2 or 3, not '4'"),
    ("debug_mem_level -0", "'debug_mem_level' must be 0, 1, 2 or 3"),
    ("force_rebuild yes", "'force_rebuild' must be 0 or 1, not 'yes'"),
    ("force_no_rebuild 2", "'force_no_rebuild' must be 0 or 1"),
    ("auto_reset_crashkernel 1", "'auto_reset_crashkernel' must be yes or no, not '1'"),
    ("options loop max_loop=1", "'options' is no longer supported: pass module options"),
    ("blacklist gfs2", "'blacklist' is no longer supported: add rd.driver.blacklist=<module>"),
    ("override_resettable 1", "'override_resettable' is no longer supported"),
    ("Path /var/crash", "unknown directive 'Path' (did you mean 'path'?)"),
    ("ext5 /dev/sda", "unknown directive 'ext5' (did you mean 'ext"),
])
def test_parse_rejects_bad_value(text: str, message: str) -> None:
    line, got = only_error(f"# line 1\n{text}")
    assert line == 2
    assert message in got


@pytest.mark.parametrize("line", [
    "path /var/crash/../../etc", "path /..", "sshkey /root/.ssh/../../etc/shadow",
    "kdump_pre /usr/../tmp/pre", "kdump_post /usr/local/sbin/..", "kdump_emergency /../e",
    "extra_bins /usr/bin/lftp /usr/../tmp/x",
])
def test_parse_rejects_dotdot_in_absolute_paths(line: str) -> None:
    number, message = only_error(f"# 1\n{line}")
    directive, value = line.split(" ", 1)
    assert number == 2
    assert message.startswith(f"'{directive}' {value.split()[-1]!r} must not contain '..': ")
    assert message.endswith("; write the path without it")


def test_parse_says_why_dotdot_makes_no_sense_in_the_dump_path() -> None:
    _, message = only_error("path /var/crash/../crash")
    assert "the capture kernel resolves it below the dump target's mount point" in message


@pytest.mark.parametrize("path", ["/var/crash..old", "/var/.crash", "/var/./crash", "/var/crash/...", "/"])
def test_parse_accepts_dots_that_are_not_dotdot_components(path: str) -> None:
    assert parse(f"path {path}", "k").path == path


@pytest.mark.parametrize(("line", "message"), [
    ("raw /dev/../etc/shadow", "raw target '/dev/../etc/shadow' must not contain '..': name the device node"),
    ("raw /dev/vg/../../etc/shadow", "raw target '/dev/vg/../../etc/shadow' must not contain '..'"),
    ("ext4 /dev/../tmp/img", "ext4 target '/dev/../tmp/img' must not contain '..'"),
    ("xfs LABEL=..", "xfs target '..' must not contain '..'"),
    ("ext4 UUID=..", "ext4 target '..' must not contain '..'"),
])
def test_parse_rejects_dotdot_in_device_paths(line: str, message: str) -> None:
    assert message in only_error(line)[1]


@pytest.mark.parametrize(("directive", "most"), sorted(MAX_SECONDS.items()))
def test_parse_caps_configured_waits(directive: str, most: int) -> None:
    assert getattr(parse(f"{directive} {most}", "k"), directive) == most
    for too_long in (most + 1, 999999999):
        assert only_error(f"{directive} {too_long}") == (
            1, (f"'{directive}' {too_long} is too long: at most {most} seconds ({most // 60} minutes); "
               "the machine stays down while the capture waits"))


def test_wait_caps_are_ones_an_admin_accepts() -> None:
    assert MAX_SECONDS == {"disk_timeout": 3600, "link_delay": 600}


@pytest.mark.parametrize("collector", ["scp", "/usr/bin/scp", "scp -q"])
def test_parse_refuses_scp_and_says_what_to_use(collector: str) -> None:
    assert only_error(f"core_collector {collector}") == (1, (
        "core_collector 'scp' is not supported: kdump-agent sends an SSH dump itself: name the server "
        "with 'ssh user@host' and keep makedumpfile as core_collector "
        "(e.g. 'core_collector makedumpfile -l --message-level 7 -d 31')"))


CONTROLS = ["\x1b", "\x08", "\x07", "\x7f", "\x9b", "\x85", "\u202e"]


@pytest.mark.parametrize("control", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
@pytest.mark.parametrize("template", [
    "extra_bins /bin/a b{c}[2J",  # quoted without repr before
    "net server{c}[2J",
    "dracut_args --force={c}[2J",
    "path rel{c}[2J",
    "patth{c}[2J /x",
    "ssh root@host{c}[2J",
    "nfs host:/x{c}/../y",
])
def test_messages_show_control_characters_escaped(control: str, template: str) -> None:
    text = template.format(c=control)
    (error,) = errors_of(text)
    escaped = control.encode("unicode_escape").decode()
    assert error.message.isprintable() and str(error).isprintable()
    assert escaped in error.message


@pytest.mark.parametrize("control", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
def test_summary_shows_control_characters_escaped(control: str) -> None:
    config = parse(f"path /var/crash{control}[2J\nfence_kdump_args -p{control}[2J", "k")
    assert config.path == f"/var/crash{control}[2J"  # the value itself is kept as written
    assert all(line.isprintable() for line in config.summary())
    assert f"path: /var/crash{control.encode('unicode_escape').decode()}[2J" in config.summary()


def test_parse_hints_that_a_hash_cut_the_quotes() -> None:
    _, message = only_error('dracut_args --add-drivers "a #b"')
    assert message.endswith("('#' starts a comment anywhere on the line, even inside quotes)")


def test_parse_reports_every_error_at_once_in_line_order() -> None:
    errors = errors_of("""force_rebuild 1         # conflicts with line 9, reported there
patth /var/crash        # 2: unknown
ext4 /dev/vdb1
xfs /dev/vdc1           # 4: second target
path relative           # 5: not absolute
path /var/crash         # 6: duplicate
final_action shell      # 7: not a final action
link_delay              # 8: no value
force_no_rebuild 1      # 9: conflicts with line 1
""")
    assert [error.line for error in errors] == [2, 4, 5, 6, 7, 8, 9]
    assert all(error.path == "kdump.conf" for error in errors)
    assert str(errors[0]) == "kdump.conf:2: unknown directive 'patth' (did you mean 'path'?)"


def test_config_errors_message_lists_one_error_per_line() -> None:
    with pytest.raises(ConfigErrors) as caught:
        parse("a 1\nb 2", "/etc/kdump.conf")
    assert str(caught.value).splitlines() == [
        "/etc/kdump.conf:1: unknown directive 'a' (see kdump.conf(5) for the directives)",
        "/etc/kdump.conf:2: unknown directive 'b' (see kdump.conf(5) for the directives)",
    ]


# ---- notices -----------------------------------------------------------------------------

ACTED_ON = ["ext4 /dev/vdb1", "path /var/crash", "core_collector cp", "failure_action halt", "default reboot",
            "final_action poweroff", "dracut_args --no-hostonly", "extra_modules dm_mod",
            "raw /dev/sdb", "extra_bins /usr/bin/lftp", "kdump_pre /p", "kdump_post /p",
            "kdump_emergency /e", "force_rebuild 0", "force_no_rebuild 1"]


@pytest.mark.parametrize("line", ACTED_ON)
def test_no_notice_for_directives_this_version_acts_on(line: str) -> None:
    assert parse(line, "k").notices == ()


def test_notices_mention_rhel_equivalents() -> None:
    notices = parse("disk_timeout 30\ndebug_mem_level 3", "k").notices
    disk_timeout, debug_mem_level = (notice.message for notice in notices)
    assert "rd.timeout" in disk_timeout and "wait for the target device" in disk_timeout
    assert "rd.memdebug" in debug_mem_level


@pytest.mark.parametrize("action", ["shell", "mount_root_run_init", "dump_to_rootfs"])
@pytest.mark.parametrize("directive", ["failure_action", "default"])
def test_no_notice_for_the_failure_actions_that_are_carried_out(directive: str, action: str) -> None:
    assert parse(f"{directive} {action}", "k").notices == ()


def test_notice_for_target_not_yet_supported() -> None:
    (notice,) = parse("virtiofs tag", "k").notices
    assert notice == Notice(1, "virtiofs target not yet supported by this version")


@pytest.mark.parametrize("line", ["nfs a:/b", "nfs4 a:/b", "ssh u@h", "sshkey /k", "link_delay 10"])
def test_no_notice_for_network_targets_and_their_settings(line: str) -> None:
    assert parse(line, "k").notices == ()


@pytest.mark.parametrize("line", ["net u@h", "net server:/export"])
def test_notice_for_net_suggests_the_current_spelling(line: str) -> None:
    (notice,) = parse(line, "k").notices
    assert "RHEL 8 and later reject it" in notice.message and "write 'nfs' or 'ssh'" in notice.message


@pytest.mark.parametrize("line", ["fence_kdump_args -p 7410", "fence_kdump_nodes n1 n2",
                                  "auto_reset_crashkernel yes"])
def test_notice_for_directive_kdump_agent_ignores(line: str) -> None:
    (notice,) = parse(line, "k").notices
    assert notice.message == f"'{line.split()[0]}' is not supported by kdump-agent (it is ignored)"


@pytest.mark.parametrize("directive", sorted({directive for directive, _ in NOTICES}))
def test_notice_table_names_only_directives_the_parser_knows(directive: str) -> None:
    # A known directive without a value is "needs a value", never "unknown directive".
    assert only_error(directive) == (1, f"'{directive}' needs a value")


# ---- summary -----------------------------------------------------------------------------

def test_summary_of_an_empty_file() -> None:
    assert parse("", "k").summary() == [
        "target: none (RHEL's rule: the file system holding /var/crash)",
        "path: /var/crash",
        "core_collector: makedumpfile -l --message-level 7 -d 31",
        "failure_action: reboot",
        "final_action: reboot",
    ]


def test_summary_lists_non_default_settings_then_notes() -> None:
    config = parse("""ext4 UUID=0f3e
failure_action shell
dracut_args --add-drivers "virtio_blk virtio_pci"
force_rebuild 1
disk_timeout 30
path /var/crash     # the default value: shown once, in its fixed place
""", "/etc/kdump.conf")
    assert config.summary() == [
        "target: ext4 UUID=0f3e",
        "path: /var/crash",
        "core_collector: makedumpfile -l --message-level 7 -d 31",
        "failure_action: shell",
        "final_action: reboot",
        "dracut_args: --add-drivers 'virtio_blk virtio_pci'",
        "disk_timeout: 30",
        "force_rebuild: yes",
        "note: /etc/kdump.conf:5: " + NOTICES[("disk_timeout", None)],
    ]


@pytest.mark.parametrize(("line", "shown"), [("raw /dev/sdb", "target: raw /dev/sdb"),
                                             ("nfs4 h:/x", "target: nfs4 h:/x"),
                                             ("ssh u@h", "target: ssh u@h")])
def test_summary_names_the_target_kind(line: str, shown: str) -> None:
    assert parse(line, "k").summary()[0] == shown


# ---- bytes, digest and the file ----------------------------------------------------------

def test_parse_bytes_records_the_sha256_of_the_file() -> None:
    data = b"path /var/crash\n"
    config = parse_bytes(data, "k")
    assert config.digest == hashlib.sha256(data).hexdigest()
    assert config.path == "/var/crash"
    assert parse("path /var/crash\n", "k").digest == ""


def test_parse_bytes_digest_changes_with_a_comment() -> None:
    assert parse_bytes(b"path /x\n", "k").digest != parse_bytes(b"path /x # c\n", "k").digest


def test_parse_bytes_rejects_non_utf8_naming_the_line() -> None:
    with pytest.raises(ConfigErrors) as caught:
        parse_bytes(b"path /var/crash\nextra_modules caf\xe9\n", "k")
    (error,) = caught.value.errors
    assert (error.line, error.message) == (2, "not valid UTF-8 (byte 0xe9 at column 18)")


def test_parse_bytes_rejects_nul_naming_the_line() -> None:
    with pytest.raises(ConfigErrors) as caught:
        parse_bytes(b"# ok\n\npath /var\x00/crash\n", "k")
    (error,) = caught.value.errors
    assert (error.line, error.message) == (3, "line contains a NUL byte; kdump.conf must be plain text")


def test_parse_bytes_reports_encoding_and_other_errors_together() -> None:
    with pytest.raises(ConfigErrors) as caught:
        parse_bytes(b"patth /x\n\xff\xfe\npath /ok\x00\n", "k")
    assert [error.line for error in caught.value.errors] == [1, 2, 3]


def test_parse_bytes_accepts_a_utf8_bom_and_digests_the_bytes_as_they_are() -> None:
    data = b"\xef\xbb\xbfpath /srv/crash\n"
    config = parse_bytes(data, "k")
    assert config.path == "/srv/crash"
    assert config.digest == hashlib.sha256(data).hexdigest()


def test_parse_bytes_accepts_a_bom_before_a_comment_and_counts_lines_from_it() -> None:
    with pytest.raises(ConfigErrors) as caught:
        parse_bytes(b"\xef\xbb\xbf# edited on Windows\npath x\n", "k")
    assert [error.line for error in caught.value.errors] == [2]


def test_parse_bytes_refuses_a_bom_that_is_not_at_the_start() -> None:
    with pytest.raises(ConfigErrors) as caught:
        parse_bytes(b"path /x\n\xef\xbb\xbfcore_collector cat\n", "k")
    (error,) = caught.value.errors
    assert (error.line, error.message) == (2, ("unknown directive '\\ufeffcore_collector' "
                                              "(did you mean 'core_collector'?)"))


def test_parse_bytes_accepts_utf8_in_comments_and_values() -> None:
    assert parse_bytes("# dépôt\npath /var/crash/café\n".encode(), "k").path == "/var/crash/café"


def test_load_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "kdump.conf"
    path.write_bytes(b"xfs LABEL=kdump\n")
    config = load(str(path))
    assert config.source == str(path)
    assert config.target == Target(TargetKind.FILESYSTEM, "LABEL=kdump", "xfs", 1)
    assert config.digest == hashlib.sha256(b"xfs LABEL=kdump\n").hexdigest()


def test_load_names_the_file_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "kdump.conf"
    path.write_text("path x\n")
    with pytest.raises(ConfigErrors) as caught:
        load(str(path))
    assert str(caught.value) == f"{path}:1: 'path' needs an absolute path, not 'x' (start it with /)"


def test_load_missing_file_is_a_config_error_at_line_0(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.conf")
    with pytest.raises(ConfigErrors) as caught:
        load(missing)
    (error,) = caught.value.errors
    assert (error.path, error.line, error.message) == (missing, 0, "cannot read: No such file or directory")


def test_load_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as caught:
        load(str(tmp_path))
    assert caught.value.errors[0].message == "cannot read: Is a directory"


def test_load_refuses_a_file_too_large_to_be_a_config(tmp_path: Path) -> None:
    path = tmp_path / "huge.conf"
    path.write_bytes(b"#" * (2 << 20))
    with pytest.raises(ConfigErrors) as caught:
        load(str(path))
    assert caught.value.errors[0].line == 0 and "larger than" in caught.value.errors[0].message


# ---- corpus ------------------------------------------------------------------------------

def test_corpus_is_there() -> None:
    assert {p.name for p in RHEL_TEMPLATES} >= {"rhel6.conf", "rhel7.conf", "rhel8.conf", "rhel9.conf"}
    assert len(BAD) >= 10


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_good_corpus_file_parses(path: Path) -> None:
    config = load(str(path))
    assert config.summary()[1].startswith("path: /")


@pytest.mark.parametrize("path", RHEL_TEMPLATES, ids=lambda p: p.name)
def test_rhel_template_as_shipped_dumps_to_var_crash_on_the_root_fs(path: Path) -> None:
    config = load(str(path))
    assert config.target is None and config.path == "/var/crash"
    assert config.core_collector[0] == "makedumpfile"
    assert config.failure_action is Action.REBOOT


def test_rhel9_template_gets_a_notice_for_auto_reset_crashkernel() -> None:
    config = load(str(DATA / "good" / "rhel9.conf"))
    assert [notice.message for notice in config.notices] == [
        "'auto_reset_crashkernel' is not supported by kdump-agent (it is ignored)"]
    assert config.core_collector == DEFAULT_COLLECTOR


def test_admin_edit_ext4_uuid() -> None:
    config = load(str(DATA / "good" / "ext4-uuid.conf"))
    assert config.target == Target(TargetKind.FILESYSTEM, "UUID=03138356-5e61-4ab3-b58e-27507ac41937",
                                   "ext4", 2)
    assert config.final_action is Action.POWEROFF and config.notices == ()


def test_admin_edit_seed_spelling() -> None:
    config = load(str(DATA / "good" / "seed-default-shell.conf"))
    assert config.target == Target(TargetKind.FILESYSTEM, "/dev/sdb1", "ext3", 2)
    assert config.path == "/crash"
    assert config.core_collector == ("makedumpfile", "-c", "--message-level", "1", "-d", "31")
    assert config.failure_action is Action.SHELL
    assert config.extra_modules == ("gfs2", "dm_mod")
    assert config.link_delay == 60  # line 7: acted on for network targets, no notice
    assert config.notices == ()


def test_admin_edit_dracut_args_with_quotes() -> None:
    config = load(str(DATA / "good" / "dracut-args-quotes.conf"))
    assert config.dracut_args == ("--omit-drivers", "cfg80211 snd", "--add-drivers", "virtio_blk virtio_pci")
    assert config.path == "/"


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_corpus_file_fails_where_it_says(path: Path) -> None:
    expect = EXPECT.fullmatch(path.read_text(encoding="utf-8-sig").splitlines()[0])
    assert expect, f"{path.name}: first line must be '# expect: <LINE>: <message>'"
    with pytest.raises(ConfigErrors) as caught:
        load(str(path))
    (error,) = caught.value.errors
    assert error.path == str(path)
    assert error.line == int(expect.group(1))
    assert expect.group(2) in error.message


# ---- fuzz --------------------------------------------------------------------------------

FUZZ_CASES = 3000
# Characters that matter to the parser, plus bytes that are not UTF-8 or not text at all.
FUZZ_BYTES = [bytes([b]) for b in b"#\"' \t\r\n:/@=[]-0123456789abcdxyz"]
FUZZ_BYTES += [b"\x00", b"\xff", b"\xc3", "é".encode()]
# Issue 11: bytes that paint terminals, a BOM, '²' (a digit to str.isdigit, not to int), '..'.
FUZZ_BYTES += [b"\x1b", b"\x7f", "\x9b".encode(), "\u202e".encode(), b"\xef\xbb\xbf", "²".encode(), b".."]
# Issue 11: lines check-config once let through; each is wrong, and stays wrong in the corpus.
ISSUE_11_LINES = [
    "ssh root@host:99999", "ssh root@host:²", "ssh root@[zz::1]", "nfs [zz::1]:/export", "net root@h:0",
    "nfs server:/export/../etc", "path /var/crash/../../etc", "sshkey /root/../k", "kdump_pre /a/../b",
    "extra_bins /bin/../x", "raw /dev/../etc/shadow", "ext4 /dev/../sda", "xfs LABEL=..",
    "dracut_args --no-hostonly --add-drivers", "dracut_args --add", "dracut_args -N /boot/initrd.img",
    "dracut_args --kver 5.14.0", "dracut_args --uefi", "disk_timeout 999999999", "link_delay 999999999",
    "core_collector scp", "extra_bins /bin/a b\x1b[2J", "net server\x1b]0;owned\x07",
]
ISSUE_11_CORPUS = ("\ufeff# issue 11\npath /var/crash\n" + "\n".join(ISSUE_11_LINES) + "\n").encode()


def mutate(lines: list[bytes], rng: random.Random) -> list[bytes]:
    """One random edit of the kind a hurried admin or a bad disk makes."""
    lines = list(lines) or [b""]
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    match rng.randrange(6):
        case 0:
            del lines[i]
        case 1:
            lines.insert(j, lines[i])
        case 2:
            lines[i], lines[j] = lines[j], lines[i]
        case 3:  # uncomment an example, the admin's usual edit
            lines[i] = lines[i].lstrip(b"#")
        case 4:
            at = rng.randrange(len(lines[i]) + 1)
            lines[i] = lines[i][:at] + b"".join(rng.choices(FUZZ_BYTES, k=rng.randint(1, 4))) + lines[i][at:]
        case _:
            at = rng.randrange(len(lines[i]) + 1)
            lines[i] = lines[i][:at] + lines[i][at + rng.randint(1, 8):]
    return lines


def check_only_config_errors(data: bytes) -> None:
    """parse_bytes may accept or reject, but a rejection is ConfigErrors with sane lines."""
    try:
        config = parse_bytes(data, "fuzz.conf")
    except ConfigErrors as errors:
        assert errors.errors
        for error in errors.errors:
            assert 1 <= error.line <= data.count(b"\n") + 1 and error.message
            assert error.message.isprintable(), error.message
        return
    assert config.digest == hashlib.sha256(data).hexdigest()
    assert config.summary() and all(line.isprintable() for line in config.summary())


@pytest.mark.parametrize("line", ISSUE_11_LINES)
def test_fuzz_issue_11_inputs_give_config_errors(line: str) -> None:
    for data in (line.encode(), b"\xef\xbb\xbf" + line.encode() + b"\n"):
        with pytest.raises(ConfigErrors) as caught:
            parse_bytes(data, "fuzz.conf")
        (error,) = caught.value.errors
        assert error.line == 1 and str(error).isprintable()


def test_fuzz_random_bytes_only_raise_config_errors() -> None:
    rng = random.Random(0x6B64756D70)
    for _ in range(FUZZ_CASES):
        data = b"".join(rng.choices(FUZZ_BYTES, k=rng.randint(0, 80)))
        if rng.random() < 0.5:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 80)))
        check_only_config_errors(data)


def test_fuzz_mutated_corpus_only_raises_config_errors() -> None:
    rng = random.Random(0x636F6E66)
    corpus = [path.read_bytes().split(b"\n") for path in GOOD] + [ISSUE_11_CORPUS.split(b"\n")]
    for _ in range(FUZZ_CASES):
        lines = rng.choice(corpus)
        for _ in range(rng.randint(1, 6)):
            lines = mutate(lines, rng)
        check_only_config_errors(b"\n".join(lines))
