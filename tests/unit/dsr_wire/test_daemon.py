"""The process contract of both daemons (dsr_wire/daemon.py), with a toy
daemon in real processes: READY, SIGHUP re-reads the files and calls
reload() in the same worker, SIGTERM calls stop() and exits 0, a worker
failing before READY ends the daemon with its status, and a master killed
with SIGKILL takes its worker with it at once (nothing stopped)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

TOY = textwrap.dedent('''
    import os, sys
    from oslo_config import cfg
    from dsr_wire import daemon

    events = sys.argv[1]
    conf = cfg.ConfigOpts()
    conf.register_opts([cfg.StrOpt('colour', mutable=True)])
    daemon.register_opts(conf)
    conf(['--config-file', sys.argv[2]])

    def note(what):
        with open(events, 'a') as f:
            f.write(f'{os.getpid()} {what}\\n')

    class Toy:
        def __init__(self, conf):
            self.conf = conf
            if conf.colour == 'broken':
                raise ValueError('a broken colour')
        def start(self):
            note(f'start {self.conf.colour}')
        def reload(self):
            note(f'reload {self.conf.colour}')
        def stop(self):
            note('stop')

    daemon.serve(conf, 'toy', Toy)
''')


class Toy:
    def __init__(self, tmp_path, colour='red'):
        self.events = tmp_path / 'events'
        self.conf = tmp_path / 'toy.conf'
        self.set_colour(colour)
        self.proc = subprocess.Popen(
            [sys.executable, '-c', TOY, str(self.events), str(self.conf)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)

    def set_colour(self, colour):
        self.conf.write_text(f'[DEFAULT]\ncolour = {colour}\n')

    def lines(self):
        try:
            return self.events.read_text().splitlines()
        except FileNotFoundError:
            return []

    def wait_event(self, text, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines():
                if line.split(' ', 1)[1] == text:
                    return int(line.split()[0])
            assert self.proc.poll() is None, self.proc.stdout.read()
            time.sleep(0.02)
        raise AssertionError(f'no {text!r} in {self.lines()}')

    def ready(self):
        assert self.proc.stdout.readline().strip() == 'READY'

    def close(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def toys(tmp_path):
    made = []

    def make(colour='red'):
        toy = Toy(tmp_path, colour)
        made.append(toy)
        return toy
    yield make
    for toy in made:
        toy.close()


def _alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(') ', 1)[1].split()[0] not in 'ZX'
    except FileNotFoundError:
        return False


def test_ready_reload_and_graceful_stop(toys):
    toy = toys()
    worker = toy.wait_event('start red')
    toy.ready()
    assert worker != toy.proc.pid
    toy.set_colour('blue')
    os.kill(toy.proc.pid, signal.SIGHUP)
    assert toy.wait_event('reload blue') == worker
    os.kill(toy.proc.pid, signal.SIGTERM)
    assert toy.proc.wait(60) == 0
    assert toy.wait_event('stop') == worker


def test_a_worker_failing_before_ready_ends_the_daemon(toys):
    toy = toys('broken')
    assert toy.proc.wait(60) == 2
    assert 'toy: a broken colour' in toy.proc.stdout.read()


def test_a_killed_master_takes_its_worker_at_once(toys):
    toy = toys()
    worker = toy.wait_event('start red')
    toy.ready()
    os.kill(toy.proc.pid, signal.SIGKILL)
    toy.proc.wait(10)
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(worker)
    assert 'stop' not in [line.split(' ', 1)[1] for line in toy.lines()]
