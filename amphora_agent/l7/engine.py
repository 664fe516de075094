"""The L7 engine: applies a whole L7 document (dsr_wire/l7.py).

    engine = Engine.from_conf(conf.l7, decap_pin_dir, se_id)
    result = engine.apply(document)   # per load balancer ACTIVE / ERROR
    engine.ready                      # HAProxy runs the applied generation,
                                      # VIPs on lo, decap attached
    engine.stats()                    # {lb id: stats.summarize(...)}

Order of an apply: the document is checked as a whole (a document that
fails dsr_wire.l7.check_document is refused and nothing changes); the
VIPs of the new document are added to loopback next to the ones in use
(HAProxy binds them); every load balancer is rendered, its candidate
configuration checked with ``haproxy -c`` and only then installed and
reloaded (or started) -- a rejected configuration leaves that load
balancer's running HAProxy and files as they were and reports it ERROR,
the others go ahead; HAProxies of load balancers no longer in the
document are stopped; the VIPs no longer needed leave loopback last.

UDP listeners are not HAProxy's: they are served by nftables rules of
their load balancer's own table (amphora_agent/l7/udp.py), installed after
the HAProxies with IP forwarding on; a rule set nft rejects makes that
load balancer ERROR and leaves its table and its HAProxy listeners as
they are.
"""

import copy
import hashlib
import json
import os
import resource
import shutil
import subprocess
import time

from oslo_log import log as logging

from amphora_agent.l7 import certs as certs_mod
from amphora_agent.l7 import haproxy
from amphora_agent.l7 import host as host_mod
from amphora_agent.l7 import render
from amphora_agent.l7 import stats as stats_mod
from amphora_agent.l7 import udp as udp_mod
from dsr_wire import l7 as l7_schema

LOG = logging.getLogger(__name__)
# Seconds a load balancer's last statistics stand in for a query of its
# HAProxy that failed.
STATS_STALE = 60.0

PING_WRAPPER = """#!/bin/sh
# HAProxy external-check for PING health monitors (Octavia's ping-wrapper).
case "$HAPROXY_SERVER_ADDR" in
  *:*) exec ping -6 -q -n -w 1 -c 1 "$HAPROXY_SERVER_ADDR" >/dev/null 2>&1 ;;
  *) exec ping -q -n -w 1 -c 1 "$HAPROXY_SERVER_ADDR" >/dev/null 2>&1 ;;
esac
"""


def _write(path, data, mode=0o644):
    """Write path atomically; whether its content changed."""
    data = data if isinstance(data, bytes) else data.encode()
    try:
        with open(path, 'rb') as f:
            changed = f.read() != data
    except OSError:
        changed = True
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + '.tmp'
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, 'wb') as f:
        f.write(data)
    os.replace(tmp, path)
    return changed


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


class Engine:
    def __init__(self, state_dir, host, cert_store, binary='haproxy',
                 snat=None, log_socket='/dev/log', connection_logging=True,
                 timeout=10.0, se_id='l7se', udp=None):
        self.paths = render.Paths(state_dir)
        self.host, self.certs = host, cert_store
        self.binary, self.timeout, self.se_id = binary, timeout, se_id
        self.snat_conf = dict(snat or {})
        self.log_socket = log_socket
        self.connection_logging = connection_logging
        self.processes = {}
        self.generation = None
        self.applied_vips = []
        self.result = {}
        self.members = {}
        self._version = None
        # lb id -> (digest of what its configuration was made from, its
        # result): an unchanged load balancer is neither rendered (Octavia's
        # templater) nor checked (a haproxy -c process) again.
        self._applied = {}
        # lb ids whose installed files a failed reload or start left
        # unloaded.
        self._unloaded = set()
        self.udp = udp or udp_mod.UdpService(adopt_tables=False)
        # lb id -> (monotonic time, the last statistics its HAProxy
        # answered) (stats()).
        self._last_stats = {}
        # Removed load balancers whose HAProxy the last apply could not
        # stop.
        self.unstopped = set()

    @classmethod
    def from_conf(cls, group, decap_pin_dir, se_id, certs_on_use=False):
        """From the [l7] option group (amphora_agent/opts.py).
        certs_on_use: the certificate store is built at the first fetch
        (certs.OnFirstFetch), not now."""
        host = host_mod.Host(
            group.state_dir, decap_pin_dir, decap=group.decap,
            interface=group.interface, addresses=group.tunnel_addresses,
            encaps=group.encaps)
        snat = {4: group.snat_source4, 6: group.snat_source6}
        if certs_on_use:
            cert_store = certs_mod.OnFirstFetch(
                lambda: certs_mod.OctaviaStore(group.cert_manager))
        else:
            cert_store = certs_mod.OctaviaStore(group.cert_manager)
        return cls(group.state_dir, host, cert_store,
                   binary=group.haproxy,
                   snat={k: v for k, v in snat.items() if v},
                   log_socket=group.log_socket,
                   connection_logging=group.connection_logging,
                   timeout=group.reload_timeout, se_id=se_id,
                   udp=udp_mod.UdpService(udp_mod.Nft(group.nft)))

    # -- apply ------------------------------------------------------------

    def version(self):
        if self._version is None:
            self._version = haproxy.version(self.binary)
        return self._version

    def process(self, lb_id):
        proc = self.processes.get(lb_id)
        if proc is None:
            proc = self.processes[lb_id] = haproxy.Process(
                self.binary, self.paths, lb_id, self.timeout)
        return proc

    def snat(self):
        """SNAT source per family: [l7] snat_source4/6, else the tunnel
        address of that family."""
        out = {f: str(a) for f, a in self.host.tunnel_addresses.items()}
        out.update({f: str(a) for f, a in self.snat_conf.items()})
        return out

    def apply(self, document):
        """Apply a whole L7 document; returns {lb id: {'status': 'ACTIVE'
        | 'ERROR', 'error': reason or None, 'action': 'started' |
        'reloaded' | 'unchanged' | 'stopped' | None, 'listeners': {id:
        reason}}} (listeners listed there are not served).  Raises
        dsr_wire.schema.Invalid for a document refused as a whole."""
        l7_schema.check_document(document)
        os.makedirs(self.paths.state_dir, exist_ok=True)
        _write(self.paths.ping_wrapper(), PING_WRAPPER, 0o755)
        lbs = [lb for lb in document['load_balancers']]
        wanted_vips = [v['address'] for lb in lbs for v in lb['vips']]
        forward = any(udp_mod.udp_listeners(lb) for lb in lbs)
        if wanted_vips or self.applied_vips:
            self.host.apply(dict.fromkeys(wanted_vips + self.applied_vips),
                            forward=forward)
        result = {}
        for lb in lbs:
            result[lb['id']] = self._apply_lb(lb)
        self._apply_udp(lbs, result)
        self.unstopped = set()
        for lb_id in self._stale(lbs):
            self._applied.pop(lb_id, None)
            try:
                self.process(lb_id).stop()
            except (haproxy.HaproxyError, OSError) as exc:
                # Its folder stays: the next apply (the agent's
                # supervision makes one) finds it stale again and
                # retries; the others go on now.
                LOG.error('stopping the HAProxy of removed load balancer '
                          '%s failed (retried): %s', lb_id, exc)
                self.unstopped.add(lb_id)
                continue
            self.processes.pop(lb_id, None)
            shutil.rmtree(self.paths.lb_dir(lb_id), ignore_errors=True)
        if wanted_vips:
            self.host.apply(dict.fromkeys(wanted_vips), forward=forward)
        else:
            self.host.teardown()
        self.applied_vips = wanted_vips
        self.generation = document['generation']
        self.result = result
        self.members = {lb['id']: [m['id'] for p in lb['pools']
                                   for m in p['members']] for lb in lbs}
        return result

    def _apply_udp(self, lbs, result):
        """The UDP listeners (nftables), merged into the HAProxy result:
        they leave the "not served" list unless udp.py does not serve
        them either; an nft error makes the load balancer ERROR."""
        udp_result = self.udp.apply(lbs, snat=self.snat())
        for lb in lbs:
            out = result[lb['id']]
            for li in udp_mod.udp_listeners(lb):
                out['listeners'].pop(li['id'], None)
            outcome = udp_result.get(lb['id'])
            if outcome is None:
                continue
            out['listeners'].update(outcome['listeners'])
            if outcome['error']:
                out['status'] = 'ERROR'
                out['error'] = '; '.join(
                    e for e in (out['error'], outcome['error']) if e)

    def members_of(self, lb_id):
        """Member ids of a load balancer of the applied document."""
        return list(self.members.get(lb_id, ()))

    def adopt(self):
        """Take over the HAProxies a previous engine left running (their
        load balancer directories under the state directory)."""
        for lb_id in self._stale(()):
            self.process(lb_id)

    def _stale(self, lbs):
        keep = {lb['id'] for lb in lbs}
        known = set(self.processes)
        if os.path.isdir(self.paths.state_dir):
            known |= {name for name in os.listdir(self.paths.state_dir)
                      if os.path.isdir(self.paths.lb_dir(name))}
        return sorted(known - keep)

    def _inputs(self, lb):
        """A digest of everything a load balancer's files are made from."""
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        text = json.dumps([lb, self.snat(), self.version(), self.log_socket,
                           self.connection_logging, self.se_id, fd_limit,
                           os.geteuid()], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def _apply_lb(self, lb):
        lb_id = lb['id']
        proc = self.process(lb_id)
        try:
            inputs = self._inputs(lb)
        except (haproxy.HaproxyError, OSError, ValueError,
                subprocess.SubprocessError):
            inputs = None   # rendered below, which says why it fails
        applied = self._applied.pop(lb_id, None)
        if inputs is not None and applied is not None and \
                applied[0] == inputs and \
                proc.running() == (applied[1]['action'] != 'stopped'):
            # Certificates are immutable by reference (Barbican), so the
            # same document makes the same files: what runs is it (or,
            # for one with nothing enabled, that nothing runs).
            self._applied[lb_id] = applied
            out = copy.deepcopy(applied[1])
            out['action'] = 'unchanged'
            return out
        out = self._render_lb(lb, proc)
        if out['status'] == 'ACTIVE' and inputs is not None:
            self._applied[lb_id] = (inputs, copy.deepcopy(out))
        return out

    def _render_lb(self, lb, proc):
        lb_id = lb['id']
        out = {'status': 'ACTIVE', 'error': None, 'action': None,
               'listeners': {}}
        try:
            rendered = render.render(
                lb, self.paths, snat=self.snat(),
                haproxy_version=self.version(), log_socket=self.log_socket,
                connection_logging=self.connection_logging,
                se_id=self.se_id,
                fd_limit=resource.getrlimit(resource.RLIMIT_NOFILE)[1],
                # Unprivileged (the shipped unit): HAProxy stays the
                # agent's user, which the unit confines.
                as_root=os.geteuid() == 0)
            out['listeners'] = dict(rendered.not_rendered)
            if rendered.config is None:
                # Nothing enabled: no HAProxy, and no installed
                # configuration (readiness counts the installed ones).
                proc.stop()
                if os.path.exists(self.paths.config(lb_id)):
                    os.unlink(self.paths.config(lb_id))
                out['action'] = 'stopped'
                return out
            if rendered.certs:
                # Keys on disk: the directory is the owner's only.
                os.makedirs(self.paths.cert_dir(lb_id), 0o700,
                            exist_ok=True)
            # A certificate or crt-list changed under the same
            # configuration text (an SNI certificate added: the bind line
            # names the list) needs a reload all the same.
            files_changed = False
            for path, ref in rendered.certs.items():
                files_changed |= _write(path, self.certs.fetch(ref), 0o600)
            for path, content in rendered.crt_lists.items():
                files_changed |= _write(path, content, 0o600)
            config = self.paths.config(lb_id)
            candidate = config + '.new'
            _write(candidate, rendered.config)
            haproxy.check(self.binary, candidate)
            if not files_changed and lb_id not in self._unloaded and \
                    _read(config) == rendered.config and proc.running():
                os.unlink(candidate)
                out['action'] = 'unchanged'
                return out
            # Installed files HAProxy has not loaded until the reload or
            # start below succeeds: the files alone no longer tell (the
            # retry of a failed reload finds them as rendered).
            self._unloaded.add(lb_id)
            os.replace(candidate, config)
            if proc.running():
                proc.reload()
                out['action'] = 'reloaded'
            else:
                proc.start()
                out['action'] = 'started'
            self._unloaded.discard(lb_id)
            self._prune_certs(lb_id, rendered)
        except (haproxy.HaproxyError, certs_mod.CertError, OSError,
                ValueError, subprocess.SubprocessError) as exc:
            # (A haproxy -c that timed out is this load balancer's
            # problem: the others are applied.)
            out.update(status='ERROR', error=str(exc))
        return out

    def _prune_certs(self, lb_id, rendered):
        """Remove the certificates, keys and crt-lists the running
        configuration no longer names (an SNI reference or a TLS listener
        removed): a private key stays on disk no longer than it is used.
        After the reload: HAProxy reads them when it loads."""
        keep = set(rendered.certs) | set(rendered.crt_lists)
        cert_dir = self.paths.cert_dir(lb_id)
        try:
            names = os.listdir(cert_dir)
        except FileNotFoundError:
            return
        for name in names:
            path = os.path.join(cert_dir, name)
            if path not in keep:
                try:
                    os.unlink(path)
                except OSError as exc:
                    LOG.warning('%s: %s not removed: %s', lb_id, path, exc)

    # -- state ------------------------------------------------------------

    @property
    def ready(self):
        """The applied generation is in place on this SE: the VIPs are on
        loopback, decap is attached, and a load balancer runs here (or
        the document has none).

        Not every load balancer: one load balancer's failure (a
        configuration HAProxy refuses, a port taken, a crash) is its own
        -- reported ERROR (rejected_objects) and retried by the agent's
        supervision -- and does not take this SE out of every other load
        balancer's L4 pool.  An SE on which none runs is broken itself (a
        missing capability, say) and stays out."""
        if self.generation is None:
            return False
        results = self.result.values()
        if results and not any(r['status'] == 'ACTIVE' for r in results):
            return False
        return not self.applied_vips or (
            self.host.mode is not None
            and self.host.vips_on_loopback(self.applied_vips))

    def dead(self):
        """Load balancers the applied generation left ACTIVE whose HAProxy
        should run (a configuration is installed) and does not: crashed,
        killed.  (An ERROR one is retried at its own pace: failed().)"""
        return sorted(lb_id for lb_id, r in self.result.items()
                      if r['status'] == 'ACTIVE'
                      and os.path.exists(self.paths.config(lb_id))
                      and not self.process(lb_id).running())

    def udp_missing(self):
        """Load balancers whose UDP table is gone (removed by hand, an nft
        flush)."""
        return sorted(lb_id for lb_id in self.udp.docs
                      if lb_id in self.result
                      and not self.udp.installed(lb_id))

    def failed(self):
        """Load balancers the applied generation left ERROR: id ->
        reason."""
        return {lb_id: r['error'] or 'not applied'
                for lb_id, r in self.result.items()
                if r['status'] == 'ERROR'}

    def rejected_objects(self):
        """What this SE does not serve of the applied generation, as the
        controller takes it from every agent ({kind: {id: reason}}): the
        load balancers left ERROR, and the listeners not served of the
        others (a UDP listener nft refused, ...)."""
        failed = self.failed()
        listeners = {lid: reason for lb_id, r in self.result.items()
                     if lb_id not in failed
                     for lid, reason in r['listeners'].items()}
        out = {}
        if failed:
            out['loadbalancers'] = {
                lb_id: f'L7 SE {self.se_id}: {reason}'
                for lb_id, reason in failed.items()}
        if listeners:
            out['listeners'] = {lid: f'L7 SE {self.se_id}: {reason}'
                                for lid, reason in listeners.items()}
        return out

    def stats(self, udp=True):
        """{lb id: {'listeners', 'pools'}}: HAProxy's and (udp) the UDP
        listeners' in the same shape."""
        out = {}
        for lb_id in set(self._last_stats) - set(self.processes):
            del self._last_stats[lb_id]
        for lb_id, proc in sorted(self.processes.items()):
            if proc.running():
                try:
                    out[lb_id] = stats_mod.collect(proc.stats_socket)
                    self._last_stats[lb_id] = (time.monotonic(),
                                               out[lb_id])
                except Exception as exc:  # noqa: BLE001 -- Octavia's query
                    # Its HAProxy runs and counts on: the last answer,
                    # not nothing (its listeners missing from a report
                    # read as counters started again, its members as
                    # OFFLINE) -- for STATS_STALE seconds at most.
                    LOG.warning('statistics of %s: %s', lb_id, exc)
                    at, last = self._last_stats.get(lb_id, (None, None))
                    fresh = at is not None and \
                        time.monotonic() - at < STATS_STALE
                    out[lb_id] = last if fresh else {'error': str(exc)}
        if udp:
            for lb_id, udp_stats in self.udp.stats().items():
                merged = out.setdefault(lb_id, {'listeners': {},
                                                'pools': {}})
                for key in ('listeners', 'pools'):
                    merged.setdefault(key, {}).update(
                        udp_stats.get(key, {}))
                if 'error' in udp_stats:
                    merged['udp_error'] = udp_stats['error']
        return out

    def stop(self):
        """Stop every HAProxy, remove the UDP tables and undo the host
        changes."""
        for proc in self.processes.values():
            proc.stop()
        self.processes.clear()
        self.udp.stop(remove=True)
        return self.host.teardown()
