"""Replay protection shared by the controllers of a deployment: two real
dsr-controller processes on the real RabbitMQ (a private vhost), Redis (a
private tooz namespace) and MariaDB (a private database).  A signed agent
message one controller accepted is refused when replayed to the other one
and when replayed to the first after its restart; each refusal is logged
once with the claimed identity and counted, and changes nothing."""

import os
import re
import sys
import uuid

from oslo_config import cfg
import oslo_messaging as messaging
import pytest

from dsr_provider.controller import db as db_mod
from dsr_provider.controller import enrolment
from dsr_wire import agent_rpc as rpc
from dsr_wire import auth
from tools.lab import agent_lab
from tools.lab import netns
from tools.lab import product_lab


class Deployment:
    """Controllers sharing one database, broker vhost and tooz namespace."""

    def __init__(self, root):
        self.root = root
        self.tag = uuid.uuid4().hex[:8]
        self.vhost = f'dsr-replay-{self.tag}'
        self.db_name = f'dsr_replay_{self.tag}'
        self.db_url = f'mysql+pymysql://root@127.0.0.1:3306/{self.db_name}'
        self.group = f'g-{self.tag}'
        self.se_id = f'se1-{self.tag}'
        self.signing_key = os.path.join(root, 'controller.key')
        self.se_key = os.path.join(root, 'se1.key')
        self.procs = {}

    def start(self):
        agent_lab.add_vhost(self.vhost)
        out = product_lab.mysql(f'CREATE DATABASE {self.db_name}')
        assert out.returncode == 0, out.stderr
        auth.generate_key(self.signing_key)
        auth.generate_key(self.se_key)
        db_mod.upgrade(self.db_url)
        self.database = db_mod.Database(self.db_url)
        enrolment.enrol(self.database, self.group, self.se_id,
                        auth.load_private_key(self.se_key).public_key())

    def controller_id(self, name):
        return f'{name}-{self.tag}'

    def log(self, name):
        path = os.path.join(self.root, f'{name}.log')
        if not os.path.exists(path):
            return ''
        with open(path) as f:
            return f.read()

    def start_controller(self, name, extra=''):
        """extra: more [dsr_controller] options (lines)."""
        path = os.path.join(self.root, f'{name}.conf')
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        with os.fdopen(fd, 'w') as f:
            f.write(f"""[DEFAULT]
transport_url = {agent_lab.RABBIT}{self.vhost}
log_file = {os.path.join(self.root, name + '.log')}

[dsr_controller]
controller_id = {self.controller_id(name)}
database_connection = {self.db_url}
default_se_group = {self.group}
coordination_url = {agent_lab.REDIS}&namespace=dsrreplay-{self.tag}
leader_group = controllers-{self.tag}
stats_interval = 3600
octavia_status_socket = {self.root}/none-status.sock
octavia_stats_socket = {self.root}/none-stats.sock
octavia_get_socket = {self.root}/none-get.sock
signing_key = {self.signing_key}
{extra}""")
        proc = netns.Proc([sys.executable, '-m',
                           'dsr_provider.controller.service',
                           '--config-file', path])
        try:
            proc.wait_for_line(r'^READY', 60)
        except BaseException:
            netns.kill_proc(proc)
            raise
        self.procs[name] = proc

    def stop_controller(self, name):
        netns.kill_proc(self.procs.pop(name), timeout=30)

    def close(self):
        netns.kill_procs(self.procs.values())
        self.procs.clear()
        if getattr(self, 'database', None) is not None:
            self.database.engine.dispose()
        product_lab.mysql(f'DROP DATABASE IF EXISTS {self.db_name}')
        agent_lab.delete_vhost(self.vhost)
        agent_lab._delete_redis_keys(f'dsrreplay-{self.tag}')


@pytest.fixture
def deployment(tmp_path):
    dep = Deployment(str(tmp_path))
    try:
        dep.start()
        dep.start_controller('ctl1')
        dep.start_controller('ctl2')
        yield dep
    finally:
        dep.close()


def _replay_lines(text):
    return [line for line in text.splitlines()
            if 'replayed message' in line]


@pytest.mark.timeout(300)
def test_message_replayed_to_another_controller_or_after_restart_is_refused(
        deployment):
    dep = deployment
    transport = messaging.get_rpc_transport(
        cfg.CONF, url=f'{agent_lab.RABBIT}{dep.vhost}')
    signer = auth.Signer(dep.se_key)

    def client(name):
        """Straight to one controller (server=), as a sniffer on the
        broker who re-publishes a captured message would."""
        return messaging.get_rpc_client(transport, messaging.Target(
            exchange=rpc.EXCHANGE, topic=rpc.CONTROLLER_TOPIC,
            server=dep.controller_id(name),
            namespace=rpc.CONTROLLER_NAMESPACE, version='1.0'),
            timeout=20)

    def report(generation):
        args = {'se_id': dep.se_id, 'se_group': dep.group,
                'state': {'applied_generation': generation, 'error': None}}
        return signer.context('report_state', args), args

    def stored():
        rows = product_lab.mysql(
            f"SELECT applied_generation, updated_at FROM {dep.db_name}."
            f"agent_states WHERE se_id = '{dep.se_id}'").stdout.split()
        return (int(rows[2]), rows[3]) if len(rows) == 4 else None

    def wait_generation(generation):
        netns.wait_for(lambda: (stored() or (None,))[0] == generation, 20,
                       f'applied_generation {generation} stored')

    try:
        captured = report(7)
        client('ctl1').cast(captured[0], 'report_state', **captured[1])
        wait_generation(7)
        # The SE moves on; an attacker replays the captured message.
        ctxt, args = report(8)
        client('ctl1').cast(ctxt, 'report_state', **args)
        wait_generation(8)
        before = stored()

        # 1. To the other controller.
        client('ctl2').cast(captured[0], 'report_state', **captured[1])
        netns.wait_for(lambda: _replay_lines(dep.log('ctl2')), 20,
                       'replay refused by ctl2')
        # A genuine message behind it: once stored, ctl2 has handled the
        # replay (one listener thread per message, in order of arrival).
        ctxt, args = report(9)
        client('ctl2').cast(ctxt, 'report_state', **args)
        wait_generation(9)
        lines = _replay_lines(dep.log('ctl2'))
        assert len(lines) == 1, lines
        assert (f'auth: refused report_state from se_id={dep.se_id} '
                f'se_group={dep.group}: replayed message') in lines[0]
        assert lines[0].endswith('[refusals: 1]'), lines[0]
        assert stored()[0] == 9 and stored() != before

        # A captured get_config replayed to the other controller would
        # hand the group's snapshot to whoever replays it.
        get_args = {'se_group': dep.group, 'se_id': dep.se_id}
        get_ctxt = signer.context('get_config', get_args)
        answer = client('ctl1').call(get_ctxt, 'get_config', **get_args)
        assert answer['format'] == auth.SIGNED_FORMAT
        with pytest.raises(messaging.MessagingException,
                           match='refused: replayed message'):
            client('ctl2').call(get_ctxt, 'get_config', **get_args)

        # 2. To the first controller after its restart (its memory gone).
        dep.stop_controller('ctl1')
        dep.start_controller('ctl1')
        after_restart = stored()
        client('ctl1').cast(captured[0], 'report_state', **captured[1])
        netns.wait_for(lambda: len(_replay_lines(dep.log('ctl1'))) == 1, 20,
                       'replay refused by the restarted ctl1')
        line = _replay_lines(dep.log('ctl1'))[0]
        assert f'se_id={dep.se_id} se_group={dep.group}' in line
        assert re.search(r'\[refusals: 1\]$', line), line
        ctxt, args = report(10)
        client('ctl1').cast(ctxt, 'report_state', **args)
        wait_generation(10)
        assert after_restart[0] == 9
        assert len(_replay_lines(dep.log('ctl1'))) == 1
        assert len(_replay_lines(dep.log('ctl2'))) == 2    # + get_config
    finally:
        transport.cleanup()
