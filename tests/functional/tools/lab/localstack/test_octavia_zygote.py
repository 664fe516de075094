"""The Octavia zygote (tools/lab/localstack/octavia_zygote.py): stacks'
octavia-api and driver agents are its children, real and working; a child
that fails tells its exit code; nothing outlives the process that started
the zygote, even when that process is SIGKILLed."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from amphora_agent.processes import process_alive
from amphora_agent.processes import process_children
from tools.lab.localstack.octavia import _Proc
from tools.lab.localstack.octavia import OctaviaStack
from tools.lab.localstack.octavia import StackError
from tools.lab.localstack import octavia_zygote
from tools.lab import netns

pytestmark = pytest.mark.timeout(300)

NOOP = {"noop_driver": "The No-Op driver."}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))))


def _agent_conf(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    conf = tmp_path / "agent.conf"
    conf.write_text(textwrap.dedent(f"""\
        [driver_agent]
        status_socket_path = {run}/status.sock
        stats_socket_path = {run}/stats.sock
        get_socket_path = {run}/get.sock
        enabled_provider_agents =
        """))
    return conf, run


def test_stacks_fork_from_one_zygote_and_work(tmp_path):
    zygote = octavia_zygote.shared(sys.executable)
    stacks = [OctaviaStack(tmp_path / name, provider_drivers=NOOP,
                           default_provider="noop_driver")
              for name in ("a", "b")]
    pids = []
    try:
        for stack in stacks:
            stack.start()       # waits for a DB-backed API request and a
            # driver-agent `get` round trip: both children serve
            pids += stack.pids.values()
            assert stack.openstack("loadbalancer", "provider", "list",
                                   json_output=True) == [
                {"name": "noop_driver", "description": "The No-Op driver."}]
        assert octavia_zygote.shared(sys.executable) is zygote
        assert set(pids) <= set(process_children(zygote.proc.pid))
        # Each in a session of its own, as the command would be.
        assert all(os.getsid(pid) == pid for pid in pids)
    finally:
        for stack in stacks:
            stack.stop()
    netns.wait_for(lambda: not any(process_alive(pid) for pid in pids), 10,
                   "every API and driver agent gone")
    assert zygote.running()


def test_a_child_that_fails_tells_its_exit_code(tmp_path):
    zygote = octavia_zygote.shared(sys.executable)
    log = tmp_path / "agent.log"
    proc = _Proc.forked(zygote, "driver_agent", "octavia-driver-agent",
                        ["--config-file", str(tmp_path / "missing.conf")],
                        log, dict(os.environ), tmp_path)
    netns.wait_for(lambda: not proc.running(), 60,
                   "the driver agent exiting on its missing config")
    with pytest.raises(StackError, match=r"octavia-driver-agent \(pid \d+\) "
                                         r"exited with [1-9]"):
        proc.check()
    assert "missing.conf" in log.read_text()
    assert proc.stop()
    with pytest.raises(octavia_zygote.ZygoteError, match="kind must be"):
        zygote.spawn("nova-api", [], {}, tmp_path, log)


def test_nothing_outlives_the_process_that_started_it(tmp_path):
    conf, run = _agent_conf(tmp_path)
    owner = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""\
            import os, sys, time
            sys.path.insert(0, {ROOT!r})
            from tools.lab.localstack import octavia_zygote
            z = octavia_zygote.shared(sys.executable)
            child = z.spawn('driver_agent', ['--config-file', {str(conf)!r}],
                            dict(os.environ), {str(tmp_path)!r},
                            {str(tmp_path / 'agent.log')!r})
            print(z.proc.pid, child.pid, flush=True)
            time.sleep(600)
            """)], stdout=subprocess.PIPE, text=True)
    try:
        zygote_pid, child_pid = map(int, owner.stdout.readline().split())
        netns.wait_for(lambda: os.path.exists(run / "get.sock"), 60,
                       "the driver agent listening")
        assert child_pid in process_children(zygote_pid)
        netns.wait_for(lambda: len(process_children(child_pid)) >= 3, 30,
                       "the driver agent's three listeners")
        listeners = process_children(child_pid)
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        netns.wait_for(
            lambda: not any(process_alive(pid) for pid in
                            [zygote_pid, child_pid, *listeners]), 20,
            "the zygote, its driver agent and the agent's listeners gone "
            "with their owner")
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


def test_a_stack_without_the_zygote_still_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("DSR_LAB_OCTAVIA_ZYGOTE", "0")
    with OctaviaStack(tmp_path / "plain", provider_drivers=NOOP,
                      default_provider="noop_driver") as stack:
        # setpriv execs the command: its parent is this process.
        assert set(stack.pids.values()) <= set(process_children(os.getpid()))
