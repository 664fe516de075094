"""dsr-controller as a service, on the real MariaDB (a fresh private
database), RabbitMQ (a private vhost) and Redis (a private tooz
namespace): two controllers started on a fresh database refuse to run and
create nothing; two "dsr-db-manage upgrade" at once both succeed, one
migrating and the other finding the schema at head; then the controllers
start, a SIGHUP makes one re-read its configuration (debug on) and SIGTERM
stops both cleanly."""

import os
import signal
import subprocess
import sys
import uuid

import pytest

from dsr_provider.controller import db as db_mod
from dsr_wire import auth
from tools.lab import agent_lab
from tools.lab import netns
from tools.lab import oslo_logs
from tools.lab import product_lab

NAMES = ('ctl1', 'ctl2')


class FreshDeployment:
    def __init__(self, root):
        self.root = root
        self.tag = uuid.uuid4().hex[:8]
        self.vhost = f'dsr-rt-{self.tag}'
        self.db_name = f'dsr_rt_{self.tag}'
        self.db_url = f'mysql+pymysql://root@127.0.0.1:3306/{self.db_name}'
        self.key = os.path.join(root, 'controller.key')
        self.procs = []
        self.controller_conf = ''   # more [dsr_controller] lines

    def prepare(self):
        out = product_lab.mysql(f'CREATE DATABASE {self.db_name}')
        assert out.returncode == 0, out.stderr
        agent_lab.add_vhost(self.vhost)
        auth.generate_key(self.key)

    def conf(self, name, debug=False):
        path = os.path.join(self.root, f'{name}.conf')
        with open(path, 'w') as f:
            f.write(f'[DEFAULT]\ndebug = {str(debug).lower()}\n'
                    f'transport_url = {agent_lab.RABBIT}{self.vhost}\n'
                    f'log_file = {self.log_path(name)}\n'
                    f'[dsr_controller]\n'
                    f'controller_id = {name}-{self.tag}\n'
                    f'database_connection = {self.db_url}\n'
                    f'coordination_url = {agent_lab.REDIS}'
                    f'&namespace=dsrrt-{self.tag}\n'
                    f'leader_group = controllers-{self.tag}\n'
                    f'octavia_status_socket = {self.root}/no-status.sock\n'
                    f'octavia_stats_socket = {self.root}/no-stats.sock\n'
                    f'octavia_get_socket = {self.root}/no-get.sock\n'
                    f'signing_key = {self.key}\n'
                    f'{self.controller_conf}')
        return path

    def log_path(self, name):
        return os.path.join(self.root, f'{name}.log')

    def log(self, name):
        try:
            with open(self.log_path(name)) as f:
                return f.read()
        except FileNotFoundError:
            return ''

    def launch(self, name):
        proc = netns.Proc([sys.executable, '-m',
                           'dsr_provider.controller.service',
                           '--config-file', self.conf(name)])
        self.procs.append(proc)
        return proc

    def db_manage(self, *args):
        return subprocess.Popen(
            [sys.executable, '-m', 'dsr_provider.cmd.db_manage',
             '--config-file', self.conf('ctl1'), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def tables(self):
        out = product_lab.mysql(f'SHOW TABLES FROM {self.db_name}')
        assert out.returncode == 0, out.stderr
        return out.stdout.split()[1:]

    def close(self):
        netns.kill_procs(self.procs, timeout=30)
        product_lab.mysql(f'DROP DATABASE IF EXISTS {self.db_name}')
        agent_lab.delete_vhost(self.vhost)
        agent_lab._delete_redis_keys(f'dsrrt-{self.tag}')


@pytest.fixture
def fresh(tmp_path):
    dep = FreshDeployment(str(tmp_path))
    try:
        dep.prepare()
        yield dep
    finally:
        dep.close()


def _worker_pid(master):
    kids = []
    for tid in os.listdir(f'/proc/{master}/task'):
        with open(f'/proc/{master}/task/{tid}/children') as f:
            kids += [int(k) for k in f.read().split()]
    assert len(kids) == 1, kids
    return kids[0]


def test_controllers_refuse_until_upgraded_then_reload_and_stop(fresh):
    # Two controllers on a fresh database: both refuse, nobody runs DDL.
    refused = [fresh.launch(name) for name in NAMES]
    for proc in refused:
        rc, out = proc.wait_output(180)
        assert rc == 2, out[-2000:]
        assert 'dsr-db-manage' in out and 'upgrade' in out, out[-2000:]
    assert fresh.tables() == []

    # Two upgrades at once: the lock serialises them.
    upgrades = [fresh.db_manage('upgrade') for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in upgrades]
    assert [p.returncode for p in upgrades] == [0, 0], outputs
    said = sorted(out.strip() for out, _ in outputs)
    head = db_mod.head()
    assert said == [f'schema already at {head}',
                    f'schema upgraded from <none> to {head}'], said
    again = fresh.db_manage('upgrade')
    assert again.communicate(timeout=300)[0].strip() == \
        f'schema already at {head}'
    assert again.returncode == 0
    db_mod.require_head(fresh.db_url)

    # Now they run.
    running = {name: fresh.launch(name) for name in NAMES}
    for proc in running.values():
        proc.wait_for_line(r'^READY', 180)

    # SIGHUP (ExecReload=): ctl1 re-reads its file, debug on.
    fresh.conf('ctl1', debug=True)
    master = running['ctl1'].pid
    worker = _worker_pid(master)
    os.kill(master, signal.SIGHUP)

    def worker_debugs_after_reload():
        _, reloaded, after = fresh.log('ctl1').partition(
            'SIGHUP: re-reading')
        return reloaded and f' {worker} DEBUG ' in after
    netns.wait_for(worker_debugs_after_reload, 60,
                   'DEBUG lines from the worker after the reload')
    assert _worker_pid(master) == worker, 'reload restarted the worker'

    # No octavia-driver-agent here: the leader says so and waits for its
    # sockets in its own loop, where a stop reaches it.
    netns.wait_for(lambda: any(
        'octavia-driver-agent socket(s)' in fresh.log(name)
        for name in NAMES), 60, 'the leader noticing the missing sockets')

    # SIGTERM: both stop cleanly, their loops at once (octavia-lib's own
    # wait for the sockets held the leader's for the join's 10 s).
    for name, proc in running.items():
        os.kill(proc.pid, signal.SIGTERM)
    for name, proc in running.items():
        rc, out = proc.wait_output(120)
        assert rc == 0, out[-2000:]
        assert f'controller {name}-{fresh.tag} stopped' in fresh.log(name)
        assert _seconds_between(fresh.log(name), 'stopping',
                                'reporter stopped') < 5, fresh.log(name)


def _seconds_between(log, first, then):
    """Seconds from the first log line with `first` to the next with
    `then` (oslo.log's timestamps)."""
    lines = log.splitlines()
    start = next(i for i, line in enumerate(lines) if first in line)
    end = next(line for line in lines[start:] if then in line)

    return oslo_logs.stamp(end) - oslo_logs.stamp(lines[start])
