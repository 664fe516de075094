import os
import subprocess
import sys
import time

from amphora_agent import processes


def test_alive_needs_the_same_start_time():
    child = subprocess.Popen([sys.executable, '-c', 'import time; '
                              'time.sleep(60)'])
    try:
        start = processes.process_start_time(child.pid)
        assert processes.process_alive(child.pid, start)
        # A reused PID has another start time: not ours.
        assert not processes.process_alive(child.pid, start + 1)
        assert processes.terminate_process(child.pid, start, timeout=5)
    finally:
        child.kill()
        child.wait()


def test_a_zombie_is_not_alive():
    child = subprocess.Popen([sys.executable, '-c', 'pass'])
    deadline = time.monotonic() + 30
    # Not reaped yet: it exits and stays a zombie until wait().
    while processes.proc_stat(child.pid)[0] != 'Z':
        assert time.monotonic() < deadline, 'child never exited'
        time.sleep(0.01)
    assert not processes.process_alive(child.pid)
    child.wait()
    assert processes.proc_stat(child.pid) is None


def test_a_process_whose_main_thread_exited_is_alive_while_threads_run():
    """Its leader shows as a zombie, but a thread still runs (and holds
    the process's sockets: a multi-threaded HAProxy worker)."""
    child = subprocess.Popen(
        [sys.executable, '-c',
         'import ctypes, sys, threading\n'
         'threading.Thread(target=sys.stdin.read).start()\n'
         'ctypes.CDLL(None).pthread_exit(None)\n'],
        stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while processes.proc_stat(child.pid)[0] != 'Z':
            assert time.monotonic() < deadline, 'main thread never exited'
            time.sleep(0.01)
        assert processes.process_alive(child.pid)
        child.stdin.close()     # the last thread returns: the process ends
        assert child.wait(30) == 0
        assert not processes.process_alive(child.pid)
    finally:
        child.kill()
        child.wait()


def test_terminate_does_not_signal_a_stranger():
    child = subprocess.Popen([sys.executable, '-c', 'import time; '
                              'time.sleep(60)'])
    try:
        start = processes.process_start_time(child.pid)
        # "Ours" (that start time) is gone already; the stranger lives.
        assert processes.terminate_process(child.pid, start + 1, 0.05)
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


def test_children_and_cmdline():
    child = subprocess.Popen([sys.executable, '-c', 'import time; '
                              'time.sleep(60)', 'marker-arg'])
    try:
        assert child.pid in processes.process_children(os.getpid())
        # Popen returns once exec started; /proc shows the new argv a
        # moment later.
        deadline = time.monotonic() + 30
        while 'marker-arg' not in processes.process_cmdline(child.pid):
            assert time.monotonic() < deadline, 'argv never appeared'
            time.sleep(0.01)
    finally:
        child.kill()
        child.wait()
