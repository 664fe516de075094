"""octavia-lib objects shaped like the ones octavia-api 19 hands a driver.

Creates come from Octavia's DB (every column present: defaults filled in,
None where nothing was given); updates carry only the fields the user sent.
"""

import socket
import threading

from octavia_lib.api.drivers import data_models as dm
from oslo_serialization import jsonutils

LB_ID = 'a5b1c3d1-0000-4000-8000-000000000001'
LISTENER_ID = 'a5b1c3d1-0000-4000-8000-000000000002'
POOL_ID = 'a5b1c3d1-0000-4000-8000-000000000003'
MEMBER_ID = 'a5b1c3d1-0000-4000-8000-000000000004'
MEMBER2_ID = 'a5b1c3d1-0000-4000-8000-000000000005'
PROJECT_ID = 'b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0'


def member(member_id=MEMBER_ID, address='198.19.1.2', port=80, **kw):
    fields = dict(address=address, admin_state_up=True, member_id=member_id,
                  monitor_address=None, monitor_port=None, name='',
                  pool_id=POOL_ID, protocol_port=port, subnet_id=None,
                  weight=1, backup=False, project_id=PROJECT_ID,
                  vnic_type='normal')
    fields.update(kw)
    return dm.Member(**fields)


def health_monitor(**kw):
    fields = dict(admin_state_up=True, delay=5, expected_codes='200',
                  healthmonitor_id=POOL_ID, http_method='GET',
                  max_retries=3, max_retries_down=3, name='',
                  pool_id=POOL_ID, timeout=3, type='HTTP', url_path='/',
                  http_version=None, domain_name=None,
                  project_id=PROJECT_ID)
    fields.update(kw)
    return dm.HealthMonitor(**fields)


def pool(pool_id=POOL_ID, members=None, healthmonitor=None, **kw):
    fields = dict(admin_state_up=True, description='',
                  lb_algorithm='SOURCE_IP_PORT', loadbalancer_id=LB_ID,
                  name='pool1',
                  pool_id=pool_id, protocol='TCP', session_persistence=None,
                  tls_container_ref=None, ca_tls_container_ref=None,
                  crl_container_ref=None, tls_enabled=False,
                  project_id=PROJECT_ID, tls_versions=None,
                  tls_ciphers=None, alpn_protocols=None)
    if members is not None:
        fields['members'] = members
    if healthmonitor is not None:
        fields['healthmonitor'] = healthmonitor
    fields.update(kw)
    return dm.Pool(**fields)


def listener(listener_id=LISTENER_ID, port=80, protocol='TCP',
             default_pool=None, **kw):
    """As db_listener_to_provider_listener gives it on create: Octavia
    fills the timeouts from [haproxy_amphora] and the other defaults."""
    fields = dict(admin_state_up=True, connection_limit=-1,
                  default_pool_id=None, default_tls_container_ref=None,
                  description='', insert_headers=None, l7policies=[],
                  listener_id=listener_id, loadbalancer_id=LB_ID,
                  name='listener1', protocol=protocol,
                  protocol_port=port, sni_container_refs=[],
                  timeout_client_data=50000, timeout_member_connect=5000,
                  timeout_member_data=50000, timeout_tcp_inspect=0,
                  client_ca_tls_container_ref=None,
                  client_authentication='NONE',
                  client_crl_container_ref=None, project_id=PROJECT_ID,
                  allowed_cidrs=None, tls_versions=None, tls_ciphers=None,
                  alpn_protocols=None, hsts_max_age=None,
                  hsts_include_subdomains=False, hsts_preload=False)
    if default_pool is not None:
        fields['default_pool'] = default_pool
        fields['default_pool_id'] = default_pool.pool_id
    fields.update(kw)
    return dm.Listener(**fields)


def loadbalancer(listeners=None, pools=None, flavor=None,
                 availability_zone=None, **kw):
    """As loadbalancer_create receives it: flavor and availability_zone
    hold the metadata dicts ({} when the LB has none)."""
    fields = dict(admin_state_up=True, description='',
                  flavor={} if flavor is None else flavor,
                  loadbalancer_id=LB_ID, name='lb1', project_id=PROJECT_ID,
                  vip_address='192.0.2.10', vip_network_id='net-1',
                  vip_port_id='port-1', vip_subnet_id='subnet-1',
                  vip_qos_policy_id=None, vip_sg_ids=[],
                  availability_zone=({} if availability_zone is None
                                     else availability_zone))
    if listeners is not None:
        fields['listeners'] = listeners
    if pools is not None:
        fields['pools'] = pools
    fields.update(kw)
    return dm.LoadBalancer(**fields)


def full_graph(members=None, **lb_kw):
    """LB -> listener TCP/80 -> pool (2 members, HTTP monitor)."""
    members = members if members is not None else [
        member(), member(MEMBER2_ID, address='2001:db8:1::2')]
    the_pool = pool(members=members, healthmonitor=health_monitor(),
                    listener_id=LISTENER_ID)
    the_listener = listener(default_pool=pool(
        members=members, healthmonitor=health_monitor(),
        listener_id=LISTENER_ID))
    return loadbalancer(listeners=[the_listener], pools=[the_pool], **lb_kw)


class Clock:
    """A clock the test sets (time.monotonic / time.time stand-in)."""

    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


class FakeRPCClient:
    """Stands in for the oslo.messaging RPC client: records the casts."""

    def __init__(self):
        self.casts = []

    def cast(self, ctxt, method, **kwargs):
        jsonutils.dumps(kwargs)        # the payload must go on the wire
        self.casts.append((method, kwargs))


class FakeNotifier:
    """Stands in for the controller's AgentNotifier: records the casts."""

    def __init__(self):
        self.casts = []

    def config_changed(self, se_group, generation):
        self.casts.append((se_group, generation))


class FakeDriverAgent:
    """octavia-driver-agent's get socket: length line, then JSON."""

    def __init__(self, path, objects):
        self.path = path
        self.objects = objects          # {(kind, id): dict}
        self.requests = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        self._sock.listen(8)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                size = b''
                while not size.endswith(b'\n'):
                    size += conn.recv(1)
                data = b''
                while len(data) < int(size):
                    data += conn.recv(int(size) - len(data))
                request = jsonutils.loads(data)
                self.requests.append(request)
                answer = jsonutils.dump_as_bytes(
                    self.objects.get((request['object'], request['id']), {}))
                conn.sendall(b'%d\n' % len(answer) + answer)

    def close(self):
        self._sock.close()
