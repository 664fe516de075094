"""A rogue client on the deployment's broker vhost (it holds the RabbitMQ
credentials, as every compute host does) against the real controller, the
real agents and octavia-api: every attack of issue 10 is refused, logged
with the claimed identity, counted, and changes nothing in Octavia, on the
SEs' dataplanes or in BGP."""

import os
import re
import threading

from oslo_config import cfg
import oslo_messaging as messaging
import pytest

from dsr_provider.controller import db as db_mod
from dsr_provider.controller import enrolment
from dsr_wire import agent_rpc as rpc
from dsr_wire import auth
from tests.functional.e2e import helpers as h
from tools.lab import netns

VIP4 = netns.VIP4
OTHER_GROUP = 'g-other'
ROGUE_SE = 'rogue-se'


def _log(path):
    with open(path) as f:
        return f.read()


def _refusals(path):
    """The controller's (or an agent's) running refusal count: the
    highest logged -- the RPC threads log concurrently, and the last line
    may be an earlier count (rehearsal 145: 13 logged, then 12)."""
    found = re.findall(r'\[refusals: (\d+)\]', _log(path))
    return max(map(int, found), default=0)


class RogueController:
    """A second consumer of the controller topic answering get_config with
    what an attacker wants the SEs to program."""

    def __init__(self, transport, answers):
        self.answers = answers
        self.served = []
        self.lock = threading.Lock()
        self.target = messaging.Target(namespace=rpc.CONTROLLER_NAMESPACE,
                                       version=rpc.CONTROLLER_API_VERSION)
        self._server = rpc.controller_server(transport, 'rogue', [self])

    def get_config(self, ctxt, se_group, se_id, packed=False):
        with self.lock:
            kind, answer = self.answers[len(self.served) % len(self.answers)]
            self.served.append(kind)
            return answer

    def report_state(self, ctxt, **kw):
        pass

    def report_member_status(self, ctxt, **kw):
        pass

    def report_stats(self, ctxt, **kw):
        pass

    def __enter__(self):
        self._server.start()
        return self

    def __exit__(self, *exc):
        self._server.stop()
        self._server.wait()


def _evil_snapshot(lab, generation):
    """An SE group config that hijacks the VIP to an attacker's host."""
    return {'schema_version': 1, 'se_group': lab.agents.se_group,
            'generation': generation, 'load_balancers': [{
                'id': 'evil', 'vips': [{'address': '203.0.113.66'}],
                'listeners': [{'id': 'evil-l', 'protocol': 'TCP',
                               'port': 80, 'pool': {
                                   'id': 'evil-p',
                                   'algorithm': 'SOURCE_IP_PORT',
                                   'members': [{'id': 'evil-m',
                                                'address': '198.19.66.6',
                                                'protocol_port': 80}]}}]}]}


def _state(lab):
    """What must not change: Octavia's objects, every SE's dataplane and
    the router's route to the VIP."""
    return {'octavia': sorted(h.objects(lab)),
            'dataplanes': {se: lab.agents.show(se) for se in h.se_names(lab)},
            'route': lab.agents.bird.kernel_nexthops(f'{VIP4}/32')}


def _programmed(state):
    """{SE: {listener: member addresses}} (weights aside)."""
    return {se: {lst['listener']: sorted(m['address']
                                         for m in lst['members'])
                 for lst in show['listeners']}
            for se, show in state['dataplanes'].items()}


@pytest.mark.timeout(900)
def test_rogue_client_on_the_broker_vhost_is_refused(make_product):
    lab = make_product(n_se=2, n_members=2)
    topo = lab.topo
    ses = h.se_names(lab)
    group = lab.agents.se_group
    victim = f'se1-{lab.tag}'
    ctl_log = os.path.join(lab.agents.root, 'ctl1.log')

    # A compromised SE of another group: enrolled, with its own real key.
    rogue_key = os.path.join(lab.agents.root, 'rogue.key')
    auth.generate_key(rogue_key)
    database = db_mod.Database(lab.controller_db_url)
    enrolment.enrol(database, OTHER_GROUP, ROGUE_SE,
                    auth.load_private_key(rogue_key).public_key())
    database.engine.dispose()

    transport = messaging.get_rpc_transport(
        cfg.CONF, url=lab.agents.transport_url)
    try:
        unsigned = rpc.ControllerClient(transport, timeout=10)
        rogue = rpc.ControllerClient(transport, timeout=10,
                                     signer=auth.Signer(rogue_key))
        # The test holds se1's key only to capture what a sniffer on the
        # broker would see: a genuine signed message and snapshot.
        genuine = rpc.ControllerClient(
            transport, timeout=10,
            signer=auth.Signer(lab.agents.se_key('se1')))

        h.create_lb(lab, 'lb1', 'l1', 'p1', VIP4,
                    monitor=('hm1', '--delay', '1', '--timeout', '1',
                             '--max-retries', '1', '--type', 'TCP'))
        # A genuine snapshot of the group before the members exist: what
        # a replay would roll the SEs back to.
        old_envelope = genuine.get_config(group, victim)
        old_generation = auth.open_envelope(
            old_envelope, lambda kid: auth.load_public_key(
                os.path.join(lab.agents.controller_keys_dir,
                             f'{kid}.pub')))['generation']
        for m in topo.members:
            h.act(lab, *h.member_args(m.name, m.ipv4, 'p1'))
        h.wait_members(lab, 'p1', {'m1': 'ONLINE', 'm2': 'ONLINE'})
        lab.agents.wait_route(f'{VIP4}/32', ses, timeout=30)
        h.wait_agents_converged(lab)
        member_ids = {m['name']: m['id'] for m in h.api(
            lab, f'pools/{h.find(lab, "pools", "p1")["id"]}/members'
        )['members']}
        before = _state(lab)
        refusals0 = _refusals(ctl_log)

        # 1. Read the group's snapshot: unsigned, as the rogue SE of
        # another group, and as the victim with the wrong key.
        for client, se_id in ((unsigned, victim), (rogue, ROGUE_SE),
                              (rogue, victim)):
            try:
                answer = client.get_config(group, se_id)
            except messaging.MessagingException as exc:
                assert 'refused' in str(exc), exc
            else:
                raise AssertionError(f'get_config answered: {answer}')

        # 2.-4. Forge every report as the victim SE (unsigned and signed
        # with a key that is not the victim's).
        errors = {mid: 'ERROR' for mid in member_ids.values()}
        forged_state = {'applied_generation': 10 ** 9, 'error': None,
                        'rejected_objects': {'members': {
                            member_ids['m1']: 'forged'}}}
        forged_stats = {'listeners': {}, 'members': {
            mid: {'bytes_in': 10 ** 12, 'packets': 1,
                  'total_connections': 1, 'active_connections': 1}
            for mid in member_ids.values()}}
        for client in (unsigned, rogue):
            client.report_member_status(victim, group, 10 ** 9, errors)
            client.report_state(victim, group, forged_state)
            client.report_stats(victim, group, forged_stats)

        # 5. The rogue SE, properly signed and enrolled, reports on the
        # other group's members.
        rogue.report_member_status(ROGUE_SE, OTHER_GROUP, 1, errors)
        rogue.report_state(ROGUE_SE, OTHER_GROUP, forged_state)

        # 6. Replays of a genuine message: the same nonce again, and one
        # older than the window.
        args = {'se_id': victim, 'se_group': group,
                'generation': lab.agents.generation,
                'statuses': {mid: 'ONLINE' for mid in member_ids.values()}}
        signer = auth.Signer(lab.agents.se_key('se1'))
        ctxt = signer.context('report_member_status', args)
        raw = messaging.get_rpc_client(transport, messaging.Target(
            exchange=rpc.EXCHANGE, topic=rpc.CONTROLLER_TOPIC,
            namespace=rpc.CONTROLLER_NAMESPACE, version='1.0'))
        raw.cast(ctxt, 'report_member_status', **args)     # genuine
        raw.cast(ctxt, 'report_member_status', **args)     # replayed
        stale = signer.context('report_member_status', args)
        stale[auth.CONTEXT_KEY]['ts'] -= 3600
        raw.cast(stale, 'report_member_status', **args)

        # 3 reads + 6 forged reports + 2 foreign reports + 2 replays.
        expected = refusals0 + 3 + 6 + 2 + 2
        netns.wait_for(lambda: _refusals(ctl_log) >= expected, 20,
                       f'{expected} refusals in the controller log')
        log = _log(ctl_log)
        for reason in ('unsigned message', 'is enrolled in group g-other',
                       'bad signature', 'other groups: member',
                       'replayed message', 'outside the'):
            assert reason in log, reason
        assert f'from se_id={victim} se_group={group}' in log
        assert f'from se_id={ROGUE_SE} se_group={OTHER_GROUP}' in log

        # 7. Serve get_config to the agents: an unsigned hijack, one signed
        # by the rogue's key, and the genuine old snapshot (a rollback).
        agent_logs = [os.path.join(lab.agents.root, f'{se}.log')
                      for se in ses]
        agent_refusals0 = [_refusals(p) for p in agent_logs]
        answers = [('unsigned', _evil_snapshot(lab, 10 ** 9)),
                   ('rogue-signed', auth.Signer(rogue_key).envelope(
                       _evil_snapshot(lab, 10 ** 9))),
                   ('replayed', old_envelope)]
        # The rogue as the only answerer (the controller is down, as it may
        # be in an upgrade): the SEs keep asking and refuse every answer.
        netns.kill_proc(lab.controllers.pop('ctl1'))
        with RogueController(transport, answers) as fake:
            # 8. Fake config_changed: unsigned and rogue-signed, with a
            # generation that would hide every real one.
            rpc.AgentNotifier(transport).config_changed(group, 10 ** 9)
            rpc.AgentNotifier(transport, signer=auth.Signer(rogue_key)) \
                .config_changed(group, 10 ** 9)
            # The agents re-fetch every resync_interval (5 s in the lab).
            netns.wait_for(lambda: len(fake.served) >= 2 * len(answers), 60,
                           'the rogue answered get_config of every kind')
        lab.start_controller('ctl1')
        netns.wait_for(
            lambda: all(_refusals(p) >= n + 2 for p, n in
                        zip(agent_logs, agent_refusals0)), 20,
            'config_changed refused on every SE')
        agent_text = ''.join(_log(p) for p in agent_logs)
        assert 'refused config_changed' in agent_text
        for reason in ('not a signed document', 'signed by unknown key',
                       f'generation {old_generation} is older than'):
            assert reason in agent_text, reason

        # A real change still reaches every SE at once (the forged
        # config_changed did not hide newer generations) ...
        h.act(lab, 'member', 'set', '--weight', '2', 'p1', 'm2')
        h.wait_agents_converged(lab)
        after = _state(lab)
        # ... and nothing the rogue sent changed Octavia, a dataplane or
        # the route (the weight of m2 aside).
        assert after['octavia'] == before['octavia']
        assert after['route'] == before['route']
        assert _programmed(after) == _programmed(before)
        assert '203.0.113.66' not in str(after['dataplanes'])
        row = lab.mysql(
            f"SELECT applied_generation FROM {lab.controller_db}."
            f"agent_states WHERE se_id = '{victim}'").stdout.split()
        assert int(row[-1]) < 10 ** 9, row
        assert lab.mysql(
            f"SELECT count(*) FROM {lab.controller_db}.agent_states "
            f"WHERE se_id = '{ROGUE_SE}'").stdout.split()[-1] == '0'
        h.wait_members(lab, 'p1', {'m1': 'ONLINE', 'm2': 'ONLINE'})
    finally:
        transport.cleanup()
