"""Guest console lines in hartvm's reports: escaped and marked as the guest's."""

from hartvm.vmm.console_log import ConsoleLog


def test_escape_sequences_and_fake_hartvm_lines_are_defused():
    log = ConsoleLog()
    log.write(b"\x1b[2J\x1b[31mred\x07\r\nhartvm: all is well\n\x1b]0;title\x07")
    report = log.report("the guest failed")
    lines = report.splitlines()
    assert lines[0] == "the guest failed"
    assert all(line.startswith("  guest | ") for line in lines[2:])
    assert not any(ord(c) < 0x20 and c != "\n" or 0x7F <= ord(c) < 0xA0 for c in report)
    assert "\\x1b[2J\\x1b[31mred\\x07" in report
    assert not any(line.startswith("hartvm:") for line in lines)


def test_a_panic_is_noticed():
    log = ConsoleLog()
    log.write(b"---[ end Kernel panic - not syncing: boom ]---\n")
    assert log.panicked
