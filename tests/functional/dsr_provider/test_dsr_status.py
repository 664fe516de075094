"""dsr-status against a live lab: a real dsr-controller (MariaDB, RabbitMQ,
Redis) and real agents on two SEs with a BIRD router.  The desired state
is written with the controller's Store (what its change endpoint does for
the provider driver); there is no Octavia, so provisioning statuses stay
owed -- dsr-status must judge by what the SEs run, not by Octavia."""

import json
import os
import subprocess
import sys
import types

import pytest

from amphora_agent.dataplane import maglev
from dsr_provider.cmd import status
from dsr_provider.controller import db as db_mod
from dsr_provider.controller import store as store_mod
from tools.lab import netns
from tools.lab import product_lab

VIP4 = netns.VIP4


class ControllerLab(product_lab.ProductLab):
    """The product lab without Octavia: the controller's Octavia sockets
    lead nowhere (its status reports fail and are retried)."""

    def start(self):
        self.agents.start()
        out = self.mysql(f'CREATE DATABASE {self.controller_db}')
        assert out.returncode == 0, out.stderr
        db_mod.upgrade(self.controller_db_url)
        root = self.agents.root
        self.stack = types.SimpleNamespace(
            driver_agent_sockets={k: os.path.join(root, f'no-{k}.sock')
                                  for k in ('status', 'stats', 'get')},
            stop=lambda: None)
        self.enrol_ses()
        self.start_controller('ctl1')
        self.agents.start_agents()

    def se_id(self, se):
        return f'{se}-{self.tag}'

    def dsr_status(self, *args):
        proc = subprocess.run(
            [sys.executable, '-m', 'dsr_provider.cmd.status',
             '--config-file', self.controller_conf('ctl1')] + list(args),
            capture_output=True, text=True, timeout=120)
        assert proc.returncode in (0, 1), proc.stderr
        return proc


@pytest.fixture
def lab(make_topology):
    lab = ControllerLab(make_topology(n_se=2, n_members=2))
    try:
        lab.start()
        yield lab
    finally:
        lab.close()


def lb_doc(lb_id, vip, members, listeners=1):
    """A load balancer with ``listeners`` TCP listeners, each with its own
    pool of ``members``."""
    doc = {'loadbalancer_id': lb_id, 'vip_address': vip,
           'admin_state_up': True, 'listeners': [], 'pools': []}
    for n in range(listeners):
        pool_id = f'{lb_id}-p{n}'
        doc['listeners'].append({
            'listener_id': f'{lb_id}-l{n}', 'loadbalancer_id': lb_id,
            'protocol': 'TCP', 'protocol_port': 80 + n,
            'default_pool_id': pool_id, 'admin_state_up': True})
        doc['pools'].append({
            'pool_id': pool_id, 'loadbalancer_id': lb_id,
            'lb_algorithm': 'SOURCE_IP_PORT', 'protocol': 'TCP',
            'admin_state_up': True,
            'members': [{'member_id': f'{pool_id}-m{i}', 'pool_id': pool_id,
                         'address': a, 'protocol_port': 80 + n, 'weight': 1,
                         'admin_state_up': True}
                        for i, a in enumerate(members)]})
    return doc


def test_fleet_view_of_a_live_lab(lab):
    database = db_mod.Database(lab.controller_db_url)
    group = lab.agents.se_group
    store = store_mod.Store(database, group)
    ses = [lab.se_id(s.name) for s in lab.topo.ses]
    try:
        members = [m.ipv4 for m in lab.topo.members]
        gen = store.create_loadbalancer(lb_doc('lb1', VIP4, members))

        def group_view():
            (view,) = status.fleet(database, group)['se_groups']
            return view

        def settled():
            view = group_view()
            return len(view['ses']) == 2 and all(
                se.get('applied_generation') == gen and
                se['bgp']['established'] == 2 and
                f'{VIP4}/32' in se['bgp']['announced'] for se in view['ses'])
        netns.wait_for(settled, 60, 'both SEs applied, BGP up, VIP routed')

        proc = lab.dsr_status('--format', 'json')
        assert proc.returncode == 0, proc.stdout
        (view,) = [g for g in json.loads(proc.stdout)['se_groups']
                   if g['se_group'] == group]
        assert view['generation'] == gen
        assert view['ring_abis'] == {se: maglev.ABI_VERSION for se in ses}
        assert not view['ring_abi_mismatch']
        assert view['load_balancers_not_as_desired'] == []
        for se in view['ses']:
            assert se['problems'] == [], se
            # The report that said generation gen was applied said what
            # the SE's maps hold: one listener of two members.
            assert se['capacity']['listeners'] == {'used': 1, 'limit': 8,
                                                   'held': 1}
            assert se['capacity']['members']['held'] == 2
            assert se['last_report_age_s'] < 30
            assert se['helpers']['bgp']['state'] == 'running'
        table = lab.dsr_status().stdout
        assert f'SE group {group}: generation {gen}' in table
        assert all(se in table for se in ses)

        # Connections through the VIP: the SEs they crossed count their
        # flows (each SE its own connection table) at their next
        # statistics report.
        connections = 6
        for port in range(41000, 41000 + connections):
            assert 'member=' in lab.topo.http_get(VIP4, source_port=port)

        def flows_held():
            return sum(se['capacity']['flows']['held'] or 0
                       for se in group_view()['ses'])
        netns.wait_for(lambda: flows_held() >= connections, 30,
                       f'{connections} flows held by the SEs')

        # More listeners than an SE holds: the SEs leave the last out.
        gen2 = store.create_loadbalancer(lb_doc('lb2', '192.0.2.11', members,
                                                listeners=8))
        netns.wait_for(lambda: all(se.get('applied_generation') == gen2
                                   for se in group_view()['ses']), 60,
                       f'generation {gen2} applied')
        view = group_view()
        (lb2,) = view['load_balancers_not_as_desired']
        assert lb2['id'] == 'lb2'
        # The desired state counts 9 listeners; each SE holds the 8 it
        # has room for.
        assert view['desired_use']['listeners'] == 9
        assert {se['se_id']: se['capacity']['listeners']['held']
                for se in view['ses']} == {se: 8 for se in ses}
        # Exactly the last listener, by each SE.
        assert len(lb2['reasons']) == 2, lb2
        assert all(any('listener lb2-l7' in r and 'max_listeners 8' in r
                       and r.endswith(f'(left out by SE {se})')
                       for r in lb2['reasons']) for se in ses), lb2

        # se2's agent dies; a change reaches se1 only.  An older release
        # on se2 (simulated: the ABI its last report would carry) is
        # flagged as a ring ABI mismatch.  The ABI is written once se2 has
        # been silent for 3 s (se1 reports every second, [agent]
        # stats_interval = 1): a report se2 sent just before it died, still
        # on its way through the controller, would otherwise write the
        # real ABI back over it (a CI run saw exactly that).
        lab.agents.kill_agent('se2')
        netns.wait_for(lambda: group_view()['ses'][1][
            'last_report_age_s'] > 3, 30, 'se2 silent for 3 s')
        product_lab.mysql(
            f'UPDATE {lab.controller_db}.agent_states SET ring_abi = 1 '
            f"WHERE se_id = '{ses[1]}'")
        gen3 = store.put_member({'member_id': 'lb1-m9', 'pool_id': 'lb1-p0',
                                 'address': '198.19.1.3', 'protocol_port': 80,
                                 'weight': 1, 'admin_state_up': True})
        netns.wait_for(lambda: group_view()['ses'][0].get(
            'applied_generation') == gen3, 60, 'se1 applied the change')
        proc = lab.dsr_status('--stale-after', '3')
        assert proc.returncode == 1, proc.stdout
        text = proc.stdout
        se1_line = next(line for line in text.splitlines()
                        if line.strip().startswith(ses[0]))
        assert 'no report' not in se1_line and 'behind' not in se1_line
        assert (f'RING ABI MISMATCH: {ses[0]} runs {maglev.ABI_VERSION}, '
                f'{ses[1]} runs 1') in text
        assert f'generation {gen3} not applied by {ses[1]}' in text
        se2_line = next(line for line in text.splitlines()
                        if line.strip().startswith(ses[1]))
        assert 'behind' in se2_line and 'no report for' in se2_line
    finally:
        database.engine.dispose()
