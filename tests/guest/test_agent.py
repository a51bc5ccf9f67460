"""The host end of the guest agent, fed what a hostile guest may say."""

from hartvm.devices.virtio.console import VirtioConsole
from hartvm.guest.agent import Agent
from hartvm.guest.command import command_script, quote


def started_agent():
    agent = Agent(VirtioConsole())
    agent._control_output(b"READY\n")
    agent.start(b"true", lambda data: None, lambda data: None)
    return agent


def test_an_overlong_status_is_an_agent_error_not_a_crash():
    agent = started_agent()
    agent._control_output(b"EXIT " + b"9" * 5000 + b"\n")
    assert agent.status is None and "said" in agent.error


def test_status_is_read_and_kills_name_the_command():
    agent = started_agent()
    sent = []
    agent.signal.send = sent.append
    agent.kill()
    agent._control_output(b"EXIT 3\n")
    agent.kill()                        # nothing runs: nothing to kill
    assert (agent.status, agent.busy, sent) == (3, False, [b"1\n"])


def test_scripts_are_one_line_whatever_the_arguments():
    script = command_script(["printf", "%s", "a\nb", "it's", "back\\slash"], {"X": "1\n2"}, "/tmp")
    assert b"\n" not in script
    assert quote(b"a\nb'c\\") == b"$'a\\nb\\'c\\\\'"
