"""DSR traffic through an Octavia load balancer of provider dsr.

Creates a load balancer, a TCP listener, a pool and the configured members
through the Octavia API (tempest's credentials), then proves, from outside
the SEs:

* requests to the VIP are answered, by more than one member;
* every request crossed an SE: the SEs' listener counters grew by at least
  one packet per request, and the members decapsulated tunnelled packets;
* the replies bypassed the SEs: the client received far more bytes (large
  responses) than the SEs carried for the listener.
"""

import json
import re
import shlex
import subprocess
import time

from tempest import config
from tempest.lib.common import rest_client
from tempest.lib.common.utils import data_utils
from tempest.lib import decorators
from tempest import test

CONF = config.CONF


class _LBClient(rest_client.RestClient):
    """The few Octavia v2 calls the scenario needs."""

    def _call(self, method, path, body=None):
        resp, data = self.request(method, f'v2/lbaas/{path}',
                                  body=json.dumps(body) if body else None)
        return json.loads(data) if data else None

    @staticmethod
    def _singular(kind):
        # 'pools/<id>/members' -> 'member' (the body's key).
        return kind.rsplit('/', 1)[-1][:-1]

    def create(self, kind, **attrs):
        singular = self._singular(kind)
        return self._call('POST', kind, {singular: attrs})[singular]

    def show(self, kind, obj_id):
        return self._call('GET', f'{kind}/{obj_id}')[self._singular(kind)]

    def delete(self, path):
        self._call('DELETE', path)


def _run(command, **values):
    argv = [part.format(**values) for part in shlex.split(command)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise AssertionError(f'{argv} failed ({out.returncode}): '
                             f'{out.stderr.strip()[-500:]}')
    return out.stdout


class DSRTrafficTest(test.BaseTestCase):

    credentials = ['primary']

    @classmethod
    def setup_credentials(cls):
        # The scenario uses the subnets it is configured with
        # ([dsr_scenario]); no project network, subnet or router (a gate's
        # Neutron may have no router service).
        cls.set_network_resources()
        super().setup_credentials()

    @classmethod
    def skip_checks(cls):
        super().skip_checks()
        opts = CONF.dsr_scenario
        if not opts.enabled:
            raise cls.skipException('[dsr_scenario] enabled is false')
        if not (opts.client_command and opts.member_addresses
                and opts.vip_subnet_id and opts.se_stats_command
                and opts.member_stats_command):
            raise cls.skipException(
                '[dsr_scenario] needs client_command, member_addresses, '
                'vip_subnet_id, se_stats_command and member_stats_command')

    @classmethod
    def setup_clients(cls):
        super().setup_clients()
        cls.lb = _LBClient(cls.os_primary.auth_provider,
                           CONF.load_balancer.catalog_type,
                           CONF.identity.region,
                           endpoint_type=CONF.load_balancer.endpoint_type)

    def _wait(self, kind, obj_id, want_operating=None):
        deadline = time.monotonic() + CONF.dsr_scenario.timeout
        while True:
            obj = self.lb.show(kind, obj_id)
            if obj['provisioning_status'] == 'ERROR':
                self.fail(f'{kind} {obj_id} went ERROR: {obj}')
            if (obj['provisioning_status'] == 'ACTIVE' and
                    want_operating in (None, obj.get('operating_status'))):
                return obj
            if time.monotonic() > deadline:
                self.fail(f'{kind} {obj_id} not ACTIVE/{want_operating} '
                          f'within {CONF.dsr_scenario.timeout} s: {obj}')
            time.sleep(0.5)   # polling interval of a status wait

    def _delete_lb(self, lb_id):
        self.lb.delete(f'loadbalancers/{lb_id}?cascade=true')
        deadline = time.monotonic() + CONF.dsr_scenario.timeout
        while time.monotonic() < deadline:
            try:
                self.lb.show('loadbalancers', lb_id)
            except Exception:  # noqa: BLE001 -- NotFound: gone
                return
            time.sleep(0.5)   # polling interval of a delete wait

    @staticmethod
    def _se_listeners(vip, port):
        """Each SE's stats of the listener on vip:port."""
        for command in CONF.dsr_scenario.se_stats_command:
            stats = json.loads(_run(command))
            for lst in stats['listeners']:
                if vip in lst['listener'] and f'{port}' in lst['listener']:
                    yield lst

    def _se_listener_counters(self, vip, port):
        packets = bytes_ = 0
        for lst in self._se_listeners(vip, port):
            packets += lst['packets']
            bytes_ += lst['bytes']
        return packets, bytes_

    @staticmethod
    def _tunnelled():
        total = 0
        for command in CONF.dsr_scenario.member_stats_command:
            stats = json.loads(_run(command))
            total += stats['ipip'] + stats['ip6ip'] + stats['gre']
        return total

    @decorators.idempotent_id('5b1a3c2e-9d4f-4e7a-8f0b-6c2d1e3f4a50')
    def test_dsr_traffic_bypasses_se_on_reply(self):
        opts = CONF.dsr_scenario
        port = opts.protocol_port
        name = data_utils.rand_name('dsr-scenario')
        lb_args = {'name': name, 'provider': opts.provider,
                   'vip_subnet_id': opts.vip_subnet_id}
        if opts.vip_address:
            lb_args['vip_address'] = opts.vip_address
        lb = self.lb.create('loadbalancers', **lb_args)
        self.addCleanup(self._delete_lb, lb['id'])
        lb = self._wait('loadbalancers', lb['id'])
        vip = lb['vip_address']
        listener_args = {'name': name, 'protocol': 'TCP',
                         'protocol_port': port, 'loadbalancer_id': lb['id'],
                         'connection_limit': opts.connection_limit}
        if opts.allowed_cidrs:
            listener_args['allowed_cidrs'] = opts.allowed_cidrs
        if opts.timeout_client_data is not None:
            listener_args['timeout_client_data'] = opts.timeout_client_data
        listener = self.lb.create('listeners', **listener_args)
        listener = self._wait('listeners', listener['id'])
        self.assertEqual(opts.connection_limit, listener['connection_limit'])
        if opts.allowed_cidrs:
            self.assertEqual(sorted(opts.allowed_cidrs),
                             sorted(listener['allowed_cidrs']))
        if opts.timeout_client_data is not None:
            self.assertEqual(opts.timeout_client_data,
                             listener['timeout_client_data'])
        pool = self.lb.create('pools', name=name, protocol='TCP',
                              lb_algorithm='SOURCE_IP_PORT',
                              listener_id=listener['id'])
        self._wait('pools', pool['id'])
        members = []
        for i, address in enumerate(opts.member_addresses):
            member_args = {'name': f'{name}-m{i}', 'address': address,
                           'protocol_port': port}
            if opts.member_subnet_id:
                member_args['subnet_id'] = opts.member_subnet_id
            members.append(self.lb.create(f'pools/{pool["id"]}/members',
                                          **member_args))
            self._wait('loadbalancers', lb['id'])
        for m in members:
            self._wait(f'pools/{pool["id"]}/members', m['id'],
                       want_operating='NO_MONITOR')
        self._wait('loadbalancers', lb['id'], want_operating='ONLINE')

        # The SEs announce the VIP once they applied it: retry the first
        # request until it is answered.
        deadline = time.monotonic() + opts.timeout
        while True:
            try:
                _run(opts.client_command, vip=vip, port=port, path='/')
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)   # polling until the route is announced

        if opts.timeout_client_data:
            # Every SE holds the listener's idle timeout.
            shown = [lst.get('idle_timeout_ms')
                     for lst in self._se_listeners(vip, port)]
            self.assertTrue(shown, 'no SE shows the listener')
            self.assertEqual({opts.timeout_client_data}, set(shown))
        se_before = self._se_listener_counters(vip, port)
        tunnelled_before = self._tunnelled()
        served = {}
        received = 0
        for _ in range(opts.requests):
            body = _run(opts.client_command, vip=vip, port=port, path='/')
            match = re.search(opts.member_name_regex, body)
            self.assertIsNotNone(match, f'no member name in {body!r}')
            served[match.group(1)] = served.get(match.group(1), 0) + 1
            big = _run(opts.client_command, vip=vip, port=port,
                       path=f'/bytes/{opts.response_bytes}')
            self.assertEqual(opts.response_bytes, len(big))
            received += len(big)
        se_after = self._se_listener_counters(vip, port)
        tunnelled = self._tunnelled() - tunnelled_before
        se_packets = se_after[0] - se_before[0]
        se_bytes = se_after[1] - se_before[1]

        if len(opts.member_addresses) > 1:
            self.assertGreater(len(served), 1,
                               f'one member served everything: {served}')
        # 2 requests per round, each at least SYN + request + ACK + FIN.
        self.assertGreaterEqual(se_packets, 2 * opts.requests * 3,
                                'the SEs did not see the client->VIP flows')
        self.assertGreaterEqual(tunnelled, se_packets,
                                'the members decapsulated fewer packets '
                                'than the SEs forwarded')
        # The replies (requests x response_bytes) never crossed an SE.
        self.assertLess(se_bytes, received / 10,
                        f'SEs carried {se_bytes} bytes for a client that '
                        f'received {received}: replies went through them')
