"""One load balancer of the L7 document -> one HAProxy configuration.

The configuration is Octavia's own: the document is converted into the
octavia.common.data_models objects the amphora driver hands to
octavia.common.jinja.haproxy.combined_listeners.jinja_cfg.JinjaTemplater,
and that templater renders it (frontends, backends, L7 policies and rules,
health checks, session persistence, TLS termination).  What the L7 SE needs
beyond an amphora is applied afterwards, and only that:

* the master process stays in the foreground (no ``daemon``): the engine
  runs it in master-worker mode (amphora_agent/l7/haproxy.py);
* SNAT: every ``server`` line gets ``source <the L7 SE's address of the
  member's family>``, so real servers answer the L7 SE whatever their
  routing (see docs/tier2.md for why not only routing);
* expected codes in a stable order (Octavia joins a set);
* SOURCE_IP_PORT (which Octavia's HAProxy map lacks and would render as
  round robin) becomes a hash of the client address and port;
* allowed_cidrs (a security-group rule on an amphora) becomes a
  ``tcp-request connection reject`` in the listener's frontend;
* a TERMINATED_HTTPS listener's tls_versions, tls_ciphers and
  alpn_protocols are added to its bind lines here, not by Octavia's
  template (bind_tls_options says why);
* the global maxconn (Octavia: the sum of the listeners' limits, on an
  amphora whose unit raises the file limit) is capped to what the engine's
  file-descriptor limit allows (2.5 per proxied connection), or HAProxy
  refuses to start;
* the amphora paths (stats socket, server state, certificates, PING
  wrapper) point under the engine's state directory.

The VIPs are bound as Octavia renders them (``bind <vip>:<port>``): they
are on the L7 SE's loopback before HAProxy starts (amphora_agent/l7/host.py),
so neither ``transparent`` nor ``freebind`` is needed.

UDP listeners are not HAProxy's on an amphora either (keepalived/LVS): they
are returned as not rendered here and served by nftables
(amphora_agent/l7/udp.py).
"""

import dataclasses
import ipaddress
import os
import re

from amphora_agent.l7 import class_sources
from dsr_wire import l7 as l7_schema

OCTAVIA_PING_WRAPPER = '/var/lib/octavia/ping-wrapper.sh'
BALANCE = {'ROUND_ROBIN': 'roundrobin', 'LEAST_CONNECTIONS': 'leastconn',
           'SOURCE_IP': 'source',
           'SOURCE_IP_PORT': 'hash src,concat(:,txn.dsr_sport)'}
SPORT_VAR = 'tcp-request content set-var(txn.dsr_sport) src_port'
NOT_RENDERED = {'UDP': 'UDP listeners are served by nftables '
                       '(amphora_agent/l7/udp.py), not HAProxy'}
FD_RESERVE = 256     # descriptors kept for listeners, sockets, checks
_SERVER_RE = re.compile(r'^(\s*server \S+ )(\S+):(\d+)(.*)$')


class Paths:
    """Where one load balancer's files live under the state directory."""

    def __init__(self, state_dir):
        self.state_dir = state_dir

    def lb_dir(self, lb_id):
        return os.path.join(self.state_dir, lb_id)

    def config(self, lb_id):
        return os.path.join(self.lb_dir(lb_id), 'haproxy.cfg')

    def stats_socket(self, lb_id):
        return os.path.join(self.lb_dir(lb_id), 'stats.sock')

    def master_socket(self, lb_id):
        return os.path.join(self.lb_dir(lb_id), 'master.sock')

    def pidfile(self, lb_id):
        return os.path.join(self.lb_dir(lb_id), 'haproxy.pid')

    def cert_dir(self, lb_id):
        return os.path.join(self.lb_dir(lb_id), 'certs')

    def cert_file(self, lb_id, ref):
        return os.path.join(self.cert_dir(lb_id), cert_name(ref) + '.pem')

    def crt_list(self, lb_id, listener_id):
        return os.path.join(self.cert_dir(lb_id), f'{listener_id}.crt-list')

    def ping_wrapper(self):
        return os.path.join(self.state_dir, 'ping-wrapper.sh')


def cert_name(ref):
    """A container reference's file name: its last component after "/"
    or ":" (a Barbican URL's container id, "local:<name>")."""
    name = re.split(r'[/:]', ref.rstrip('/:'))[-1]
    return re.sub(r'[^A-Za-z0-9_.-]', '_', name) or 'cert'


@dataclasses.dataclass
class Rendered:
    config: str
    crt_lists: dict       # path -> content
    certs: dict           # path -> container reference to fetch
    not_rendered: dict    # listener id -> reason


_templater_class = None


def preload():
    """Import Octavia's templater now.  It takes seconds (octavia.db.models
    pulls in the API's wsme types: 12 s at load 4 here), which a first
    apply must not spend -- the L7 agent calls this before it says ready."""
    _templater_type()


def _templater(paths, log_socket, connection_logging):
    templater = _templater_type()(
        base_amp_path=paths.state_dir, base_crt_dir=paths.state_dir,
        log_http=log_socket, log_server=log_socket,
        connection_logging=connection_logging)
    templater.paths = paths
    return templater


def _templater_type():
    # Octavia is imported on first use only: it registers its options in
    # the global CONF and takes seconds to import, which the L4 agent
    # never needs.
    global _templater_class
    if _templater_class is None:
        with class_sources.cached():    # 6 CPU-s -> 2 (class_sources.py)
            from octavia.common.jinja.haproxy.combined_listeners import \
                jinja_cfg

        class Templater(jinja_cfg.JinjaTemplater):
            def _transform_listener(self, listener, tls_certs,
                                    feature_compatibility, loadbalancer):
                out = super()._transform_listener(
                    listener, tls_certs, feature_compatibility, loadbalancer)
                if 'crt_list_filename' in out:
                    out['crt_list_filename'] = self.paths.crt_list(
                        loadbalancer.id, listener.id)
                return out

            def _transform_pool(self, pool, *args, **kwargs):
                out = super()._transform_pool(pool, *args, **kwargs)
                out['lb_algorithm'] = BALANCE[pool.lb_algorithm]
                return out

            def _transform_health_monitor(self, monitor, *args):
                # Octavia joins a set: the order would change from one
                # process to the next, and with it the configuration.
                out = super()._transform_health_monitor(monitor, *args)
                if out['expected_codes']:
                    out['expected_codes'] = '|'.join(sorted(
                        out['expected_codes'].split('|'), key=int))
                return out

        _templater_class = Templater
    return _templater_class


def _monitor(doc):
    from octavia.common import data_models as dm
    if doc is None:
        return None
    http = doc['type'] in ('HTTP', 'HTTPS')
    return dm.HealthMonitor(
        id=doc['id'], type=doc['type'], delay=doc['delay'],
        timeout=doc['timeout'], rise_threshold=doc['max_retries'],
        fall_threshold=doc.get('max_retries_down') or 3,
        http_method=(doc.get('http_method') or 'GET') if http else None,
        url_path=(doc.get('url_path') or '/') if http else None,
        expected_codes=(doc.get('expected_codes') or '200') if http
        else None,
        enabled=doc.get('admin_state_up', True),
        provisioning_status='ACTIVE')


def _pool(doc):
    from octavia.common import data_models as dm
    sp = doc.get('session_persistence')
    return dm.Pool(
        id=doc['id'], protocol=doc['protocol'],
        lb_algorithm=doc['lb_algorithm'],
        enabled=doc.get('admin_state_up', True),
        provisioning_status='ACTIVE', tls_enabled=doc.get('tls_enabled',
                                                          False),
        session_persistence=dm.SessionPersistence(
            type=sp['type'], cookie_name=sp.get('cookie_name'))
        if sp else None,
        health_monitor=_monitor(doc.get('healthmonitor')),
        members=[dm.Member(
            id=m['id'], ip_address=m['address'],
            protocol_port=m['protocol_port'], weight=m.get('weight', 1),
            backup=m.get('backup', False),
            enabled=m.get('admin_state_up', True),
            monitor_address=m.get('monitor_address'),
            monitor_port=m.get('monitor_port'),
            provisioning_status='ACTIVE') for m in doc['members']])


def _policy(doc, pools):
    from octavia.common import data_models as dm
    pool = pools.get(doc.get('redirect_pool_id'))
    return dm.L7Policy(
        id=doc['id'], action=doc['action'], position=doc.get('position'),
        redirect_pool=pool, redirect_pool_id=doc.get('redirect_pool_id'),
        redirect_url=doc.get('redirect_url'),
        redirect_prefix=doc.get('redirect_prefix'),
        redirect_http_code=doc.get('redirect_http_code'),
        enabled=doc.get('admin_state_up', True),
        provisioning_status='ACTIVE',
        l7rules=[dm.L7Rule(
            id=r['id'], type=r['type'], compare_type=r['compare_type'],
            key=r.get('key'), value=r['value'],
            invert=r.get('invert', False),
            enabled=r.get('admin_state_up', True),
            provisioning_status='ACTIVE') for r in doc.get('rules') or ()])


def _listener(doc, lb, pools):
    from octavia.common import data_models as dm
    policies = sorted(doc.get('l7policies') or (),
                      key=lambda p: p.get('position') or 0)
    l7policies = [_policy(p, pools) for p in policies]
    default = pools.get(doc.get('default_pool_id'))
    used = [default] if default else []
    for policy in l7policies:
        if policy.redirect_pool is not None \
                and policy.redirect_pool not in used:
            used.append(policy.redirect_pool)
    return dm.Listener(
        id=doc['id'], protocol=doc['protocol'],
        protocol_port=doc['protocol_port'],
        connection_limit=doc.get('connection_limit'),
        enabled=doc.get('admin_state_up', True),
        provisioning_status='ACTIVE',
        default_pool=default, default_pool_id=doc.get('default_pool_id'),
        pools=used, l7policies=l7policies, load_balancer=lb,
        insert_headers=doc.get('insert_headers') or {},
        timeout_client_data=doc.get('timeout_client_data'),
        timeout_member_connect=doc.get('timeout_member_connect'),
        timeout_member_data=doc.get('timeout_member_data'),
        timeout_tcp_inspect=doc.get('timeout_tcp_inspect'),
        tls_certificate_id=doc.get('default_tls_container_ref'),
        allowed_cidrs=doc.get('allowed_cidrs') or [])


def to_data_models(lb_doc):
    """The document's load balancer as Octavia's data models: (load
    balancer, its rendered listeners, {listener id: reason not rendered})."""
    from octavia.common import data_models as dm
    vips = [v['address'] for v in lb_doc['vips']]
    lb = dm.LoadBalancer(
        id=lb_doc['id'], project_id=lb_doc['id'], topology='SINGLE',
        enabled=lb_doc.get('admin_state_up', True),
        provisioning_status='ACTIVE', amphorae=[],
        vip=dm.Vip(ip_address=vips[0]),
        additional_vips=[dm.AdditionalVip(ip_address=v) for v in vips[1:]])
    pools = {p['id']: _pool(p) for p in lb_doc['pools']}
    lb.pools = list(pools.values())
    skipped = {}
    for doc in lb_doc['listeners']:
        if doc['protocol'] in NOT_RENDERED:
            skipped[doc['id']] = NOT_RENDERED[doc['protocol']]
            continue
        lb.listeners.append(_listener(doc, lb, pools))
    return lb, lb.listeners, skipped


def crt_list(paths, lb_id, listener_doc):
    """The crt-list of a TERMINATED_HTTPS listener: the default certificate
    first (HAProxy's default), then the SNI certificates."""
    refs = [listener_doc['default_tls_container_ref']]
    refs += [r for r in listener_doc.get('sni_container_refs') or ()
             if r not in refs]
    return {paths.cert_file(lb_id, r): r for r in refs}


def bind_tls_options(doc):
    """The bind keywords of a TERMINATED_HTTPS listener's tls_versions,
    tls_ciphers and alpn_protocols (dsr_wire/l7.py); none for a setting
    the document does not carry, which leaves HAProxy's default.

    Not Octavia's rendering: its ``no-tlsv1x`` flags cannot lower HAProxy's
    own minimum (TLSv1.2 since 2.2) and log a warning next to
    ssl-min-ver, so the range is ``ssl-min-ver``/``ssl-max-ver``; and it
    sorts the ciphers, which are the server's order of preference."""
    versions = doc.get('tls_versions')
    options = []
    if versions:
        # l7.TLS_VERSIONS are ordered and named as HAProxy names them.
        chosen = [v for v in l7_schema.TLS_VERSIONS if v in versions]
        options += ['ssl-min-ver', chosen[0], 'ssl-max-ver', chosen[-1]]
    ciphers = doc.get('tls_ciphers')
    if ciphers:
        tls12, tls13 = l7_schema.split_ciphers(ciphers)
        # A part no enabled version uses is left out, as Octavia does; an
        # empty one too (HAProxy refuses an empty list): that version keeps
        # OpenSSL's default ciphers.
        if tls12 and (not versions or 'TLSv1.2' in versions):
            options += ['ciphers', ':'.join(tls12)]
        if tls13 and (not versions or 'TLSv1.3' in versions):
            options += ['ciphersuites', ':'.join(tls13)]
    if doc.get('alpn_protocols'):
        options += ['alpn', ','.join(doc['alpn_protocols'])]
    return options


def _in_frontends(lines):
    """(name of the frontend the line is in or None, line) for each line
    (Octavia names a listener's frontend by its id)."""
    frontend = None
    for line in lines:
        if line.startswith('frontend '):
            frontend = line.split()[1]
        elif line and not line.startswith(' '):
            frontend = None
        yield frontend, line


def _bind_tls(lines, tls_by_listener):
    """Each listed frontend's bind lines (one per VIP) with its options."""
    out = []
    for frontend, line in _in_frontends(lines):
        options = tls_by_listener.get(frontend)
        if options and line.strip().startswith('bind '):
            line = ' '.join([line, *options])
        out.append(line)
    return out


def _server_source(line, snat):
    m = _SERVER_RE.match(line)
    if not m:
        return line
    family = ipaddress.ip_address(m.group(2)).version
    source = snat.get(family)
    if source is None:
        return line
    # HAProxy reads the last ":" of a bare IPv6 address as a port.
    if family == 6:
        source = f'[{source}]'
    return f'{line} source {source}'


def _allowed_cidrs(lines, cidrs_by_listener):
    """After the "mode" line of each listed frontend, a rule rejecting
    connections from outside its CIDRs."""
    out = []
    for frontend, line in _in_frontends(lines):
        out.append(line)
        cidrs = cidrs_by_listener.get(frontend)
        if cidrs and line.strip().startswith('mode '):
            out.append('    tcp-request connection reject if !{ src '
                       + ' '.join(cidrs) + ' }')
    return out


def max_connections(fd_limit):
    """The largest global maxconn HAProxy can run with ``fd_limit``."""
    # Two per connection plus, with Octavia's splice options, a pipe (two
    # descriptors) for every fourth: 2.5 per connection.
    return max(1, (fd_limit - FD_RESERVE) * 2 // 5)


def post_process(text, paths, snat, cidrs_by_listener, fd_limit=None,
                 tls_by_listener=None, as_root=True):
    """The DSR edits of a configuration Octavia rendered.  as_root: HAProxy
    starts as root (an amphora's, which then drops to Octavia's ``user
    nobody``); else it runs as the agent's own unprivileged user, which
    cannot change its uid (HAProxy exits "Cannot set uid"): the global
    user and group lines are left out."""
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped == 'daemon':
            continue
        if not as_root and stripped.split(' ', 1)[0] in ('user', 'group',
                                                         'uid', 'gid') \
                and _in_global(lines):
            continue
        if fd_limit and fd_limit > 0 and stripped.startswith('maxconn ') \
                and _in_global(lines):
            cap = max_connections(fd_limit)
            if int(stripped.split()[1]) > cap:
                line = f'    maxconn {cap}'
        line = line.replace(OCTAVIA_PING_WRAPPER, paths.ping_wrapper())
        line = _server_source(line, snat)
        lines.append(line)
        if stripped.startswith('balance hash ') \
                and 'txn.dsr_sport' in stripped:
            lines.append('    ' + SPORT_VAR)
    lines = _allowed_cidrs(lines, cidrs_by_listener)
    lines = _bind_tls(lines, tls_by_listener or {})
    return '\n'.join(lines) + '\n'


def _in_global(lines):
    for line in reversed(lines):
        if line and not line.startswith(' '):
            return line.strip() == 'global'
    return False


def render(lb_doc, paths, snat=None, haproxy_version=('2', '6'),
           log_socket='/dev/log', connection_logging=True, se_id='l7se',
           fd_limit=None, as_root=True):
    """Render one load balancer of the L7 document.  snat: {4: address,
    6: address} the L7 SE connects to members from (a family absent:
    the kernel's route source); fd_limit: the hard RLIMIT_NOFILE HAProxy
    will run with (None or RLIM_INFINITY: no cap); as_root: HAProxy starts
    as root (post_process)."""
    from octavia.common import data_models as dm
    lb, listeners, skipped = to_data_models(lb_doc)
    crt_lists, certs = {}, {}
    for doc in lb_doc['listeners']:
        if doc['protocol'] == 'TERMINATED_HTTPS' \
                and doc['id'] not in skipped:
            files = crt_list(paths, lb.id, doc)
            certs.update(files)
            crt_lists[paths.crt_list(lb.id, doc['id'])] = ''.join(
                f'{path}\n' for path in files)
    if not lb.enabled or not any(li.enabled for li in listeners):
        # Nothing to serve: Octavia would render no proxy at all, and an
        # HAProxy without one only holds descriptors.
        return Rendered(None, crt_lists, certs, skipped)
    text = _templater(paths, log_socket, connection_logging).build_config(
        dm.Amphora(id=se_id), listeners, tls_certs=None,
        haproxy_versions=tuple(haproxy_version), amp_details={},
        socket_path=paths.stats_socket(lb.id))
    cidrs = {d['id']: d['allowed_cidrs'] for d in lb_doc['listeners']
             if d.get('allowed_cidrs')}
    tls = {d['id']: bind_tls_options(d) for d in lb_doc['listeners']
           if d['protocol'] == 'TERMINATED_HTTPS'}
    return Rendered(post_process(text, paths, dict(snat or {}), cidrs,
                                 fd_limit, tls, as_root=as_root),
                    crt_lists, certs, skipped)
