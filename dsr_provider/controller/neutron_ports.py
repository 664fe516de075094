"""Neutron ports of members and SEs, reconciled with the desired state.

A DSR member answers clients from the VIP, an address its Neutron port does
not have: port security drops those replies unless the VIP is one of the
port's allowed_address_pairs.  So, for every member whose address belongs
to a Neutron port (found by the member's subnet_id, else its load
balancer's VIP subnet, and the address), the VIPs of every load balancer
whose pool holds it go into that port's pairs, and leave when the last such
membership goes.  The SEs' ports (neutron_se_ports) get their group's VIPs
the same way, or port security off; member ports may get the tunnel
security group (neutron_tunnels.py).

Ownership: the controller removes only what it added, recorded in
neutron_owned (neutron_pairs.py has the merge rules).  Every port update
is a compare-and-set on the port's revision_number (If-Match), re-read and
re-planned on 412, so two controllers -- or the operator editing the port
at the same time -- never lose each other's pairs.  Normally only the
elected leader runs this (neutron_sync.py).

A port the controller may not update (403 policy or another project, 404,
409, 400 e.g. too many pairs) while its port security is on drops the
member's replies: the refusal is stored as the member's reason
(neutron_member_ports) and the reporter makes the member operating ERROR.
Each port is handled on its own: a refusal or a slow Neutron never stops
the others, and never touches the reporting loop (its own thread).
"""

import collections
import time

from oslo_log import log as logging
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from dsr_provider.controller import models
from dsr_provider.controller import neutron_pairs

LOG = logging.getLogger(__name__)

# Compare-and-set attempts on one port before the next round tries again.
CAS_ATTEMPTS = 5
# Statuses that are Neutron's answer about this port (not an outage).
REFUSALS = (400, 403, 404, 409)


class Want(collections.namedtuple('Want', 'pairs tunnel port_security_off')):
    """What one port should have: VIP pairs, the tunnel group (member
    ports), port security off (SE ports in that mode)."""


NOTHING = Want(frozenset(), False, False)

MemberWant = collections.namedtuple('MemberWant', 'subnet_id address vips')


class PortRefused(Exception):
    """Neutron refused the port's update (the member's reason)."""


def member_reasons(session):
    """{member_id: why its port drops its replies} for the reporter."""
    return dict(session.execute(sa.select(
        models.NeutronMemberPort.member_id,
        models.NeutronMemberPort.reason).where(
            models.NeutronMemberPort.reason.isnot(None))).all())


def desired(session):
    """(members, group_vips) from the controller's desired state: members
    {id: MemberWant} of accepted pools and load balancers; group_vips
    {se_group: set of VIP addresses}."""
    lbs = {lb.id: lb for lb in session.query(
        models.LoadBalancer).filter_by(rejected=None)}
    vips = {lb_id: frozenset(neutron_pairs.normalise(a) for a in
                             models.vip_addresses(lb.doc))
            for lb_id, lb in lbs.items()}
    pools = {p.id: p.loadbalancer_id for p in session.query(
        models.Pool).filter_by(rejected=None) if p.loadbalancer_id in lbs}
    members = {}
    for m in session.query(models.Member).filter_by(rejected=None):
        lb_id = pools.get(m.pool_id)
        if lb_id is None or not m.doc.get('address'):
            continue
        subnet = m.doc.get('subnet_id') or \
            lbs[lb_id].doc.get('vip_subnet_id')
        members[m.id] = MemberWant(subnet, m.doc['address'], vips[lb_id])
    group_vips = collections.defaultdict(set)
    for lb_id, lb in lbs.items():
        group_vips[lb.se_group] |= vips[lb_id]
    return members, group_vips


def _status(exc):
    return getattr(exc, 'status_code', None)


def _neutron_message(exc):
    details = getattr(exc, 'details', None)
    return str(details or exc).strip()


class PortSync:
    def __init__(self, database, network, member_ports=True, se_ports=None,
                 se_port_mode='address_pairs', tunnels=None,
                 retry_interval=10.0, max_retry_interval=300.0):
        """network: openstacksdk's network proxy; se_ports: {port_id:
        se_group}; tunnels: neutron_tunnels.TunnelGroups or None."""
        self.db = database
        self.network = network
        self.member_ports = member_ports
        self.se_ports = dict(se_ports or {})
        self.se_port_mode = se_port_mode
        self.tunnels = tunnels
        self.retry_interval = retry_interval
        self.max_retry_interval = max_retry_interval
        self._applied = {}      # port -> Want last applied
        self._failures = {}     # port -> (consecutive failures, retry at)

    # ------------------------------------------------------------ round
    def run_once(self, full=False):
        """Bring the ports whose wanted state changed (every port when
        full) to it.  Returns {port_id: refusal or None} for the ports
        it updated or checked (not those Neutron did not answer for)."""
        if full:
            self._applied.clear()
            if self.tunnels is not None:
                self.tunnels.forget()
        with self.db.session() as s:
            members, group_vips = desired(s)
            owned_ports = {p for (p,) in s.query(
                models.NeutronOwned.port_id).distinct()}
        on_port = self._resolve(members, full) if self.member_ports else {}
        wants = self._wants(members, on_port, group_vips)
        now = time.monotonic()
        todo = set()
        for port_id in set(wants) | owned_ports:
            want = wants.get(port_id, NOTHING)
            failed = self._failures.get(port_id)
            if failed is not None:
                if now >= failed[1] or failed[2] != want:
                    todo.add(port_id)
            elif full or self._applied.get(port_id) != want:
                todo.add(port_id)
        results = {}
        for port_id in sorted(todo):
            verdict, reason = self._sync(port_id, wants.get(port_id,
                                                            NOTHING))
            if verdict:
                results[port_id] = reason
        self._record_reasons(results)
        return results

    def _wants(self, members, on_port, group_vips):
        pairs = collections.defaultdict(set)
        for member_id, port_id in on_port.items():
            if port_id is not None and member_id in members:
                pairs[port_id] |= members[member_id].vips
        wants = {p: Want(frozenset(v), self.tunnels is not None, False)
                 for p, v in pairs.items()}
        if self.se_port_mode != 'unmanaged':
            off = self.se_port_mode == 'port_security_off'
            for port_id, group in self.se_ports.items():
                vips = frozenset() if off else frozenset(
                    group_vips.get(group, ()))
                wants[port_id] = Want(vips, False, off)
        return wants

    # ------------------------------------------------ members -> ports
    def _resolve(self, members, full):
        """{member_id: port_id or None}; looks up new or changed members
        (every member when full) and forgets deleted ones."""
        with self.db.session() as s:
            rows = {r.member_id: r for r in s.query(
                models.NeutronMemberPort)}
            gone = set(rows) - set(members)
            for member_id in gone:
                rows.pop(member_id)
            # Bulk statements throughout: a row another controller deleted
            # meanwhile is no error (an ORM delete would raise StaleData).
            if gone:
                s.query(models.NeutronMemberPort).filter(
                    models.NeutronMemberPort.member_id.in_(gone)).delete()
        on_port = {}
        for member_id, want in sorted(members.items()):
            row = rows.get(member_id)
            if row is not None and not full and \
                    row.subnet_id == want.subnet_id and \
                    row.address == want.address:
                on_port[member_id] = row.port_id
                continue
            try:
                port_id = self._lookup(want.subnet_id, want.address)
            except Exception as exc:  # noqa: BLE001 -- Neutron unreachable
                LOG.warning('member %s: looking up the Neutron port of %s '
                            'failed: %s; next round retries', member_id,
                            want.address, exc)
                if row is not None:
                    on_port[member_id] = row.port_id
                continue
            on_port[member_id] = port_id
            self._record_port(member_id, want, port_id)
        return on_port

    def _record_port(self, member_id, want, port_id):
        with self.db.session() as s:
            row = s.get(models.NeutronMemberPort, member_id)
            if row is None:
                try:
                    with s.begin_nested():
                        row = models.NeutronMemberPort(
                            member_id=member_id, address=want.address,
                            checked_at=time.time())
                        s.add(row)
                except sa_exc.IntegrityError:
                    # Recorded meanwhile by another controller.  A plain
                    # read would not see it: InnoDB's REPEATABLE READ
                    # answers from the snapshot the first read took; a
                    # locking read sees the latest committed row.
                    row = s.get(models.NeutronMemberPort, member_id,
                                populate_existing=True,
                                with_for_update=True)
                    if row is None:
                        # ...and removed again since: next round.
                        return
            if row.port_id != port_id:
                row.reason = None
            row.subnet_id, row.address = want.subnet_id, want.address
            row.port_id, row.checked_at = port_id, time.time()

    def _lookup(self, subnet_id, address):
        """The port with this fixed IP (on this subnet), or None."""
        address = neutron_pairs.normalise(address)
        filters = [f'ip_address={address}']
        if subnet_id:
            filters.append(f'subnet_id={subnet_id}')
        found = []
        for port in self.network.ports(fixed_ips=filters):
            for ip in port.fixed_ips or ():
                if neutron_pairs.normalise(ip['ip_address']) == address and \
                        (not subnet_id or ip.get('subnet_id') == subnet_id):
                    found.append(port.id)
                    break
        if len(found) > 1:
            LOG.warning('%s on subnet %s is a fixed IP of %d ports (%s): '
                        'none is managed', address, subnet_id, len(found),
                        ', '.join(found))
            return None
        return found[0] if found else None

    # ------------------------------------------------------ one port
    def _sync(self, port_id, want):
        """Apply `want` to one port: (True, None) done, (True, refusal)
        refused, (False, None) no verdict (Neutron unreachable)."""
        # openstacksdk only where Neutron is called: the reporter imports
        # this module for member_reasons(), and the sdk is a second of
        # every controller's start (docs/benchmarks.md, "Session 21").
        from openstack import exceptions as sdk_exceptions
        try:
            self._apply(port_id, want)
        except PortRefused as exc:
            return True, self._refused(port_id, want, str(exc))
        except sdk_exceptions.HttpException as exc:
            if _status(exc) not in REFUSALS:
                return self._outage(port_id, want, exc)
            # e.g. the tunnel group may not be created in the project.
            return True, self._refused(port_id, want, (
                f'Neutron refused a change for port {port_id}: HTTP '
                f'{_status(exc)} {_neutron_message(exc)}'))
        except Exception as exc:  # noqa: BLE001 -- outage: no verdict
            return self._outage(port_id, want, exc)
        self._failures.pop(port_id, None)
        self._applied[port_id] = want
        return True, None

    def _outage(self, port_id, want, exc):
        LOG.warning('Neutron port %s not reconciled (%s); retried in '
                    '%.0f s', port_id, exc, self._failed(port_id, want))
        return False, None

    def _refused(self, port_id, want, reason):
        if self._failures.get(port_id, (0, 0, None, None))[3] != reason:
            LOG.error('Neutron port %s: %s', port_id, reason)
        self._failed(port_id, want, reason)
        return reason

    def _failed(self, port_id, want, reason=None):
        """Back off: the next try waits twice as long each time (a
        changed want is tried at once)."""
        count = self._failures.get(port_id, (0,))[0] + 1
        delay = min(self.retry_interval * 2 ** (count - 1),
                    self.max_retry_interval)
        self._failures[port_id] = (count, time.monotonic() + delay, want,
                                   reason)
        return delay

    def _apply(self, port_id, want):
        from openstack import exceptions as sdk_exceptions
        refused = 0
        for _ in range(CAS_ATTEMPTS):
            try:
                port = self.network.get_port(port_id)
            except sdk_exceptions.NotFoundException:
                LOG.info('Neutron port %s is gone: forgetting what the '
                         'controller had added to it', port_id)
                self._set_owned(port_id, 'pair', ())
                self._set_owned(port_id, 'sg', ())
                return
            attrs, pairs, groups = self._plan(port, want)
            if not attrs:
                self._set_owned(port_id, 'pair', pairs.owned)
                self._set_owned(port_id, 'sg', groups.owned)
                return
            # Intent first: a crash after the update leaves a row to
            # clean up, never a pair nobody knows is ours.
            self._add_owned(port_id, 'pair', pairs.added)
            self._add_owned(port_id, 'sg', groups.added)
            try:
                self.network.update_port(
                    port, if_revision=port.revision_number, **attrs)
            except sdk_exceptions.HttpException as exc:
                if _status(exc) == 412:
                    continue        # changed meanwhile: read and plan again
                if _status(exc) not in REFUSALS:
                    raise           # outage: the intent rows are retried
                # Read and plan once more before believing a refusal: two
                # updates racing inside Neutron make the loser's a 400
                # ("duplicate address pair"), not a 412.
                refused += 1
                if refused < 2:
                    continue
                # Refused for good: what it would have added is absent, so
                # the rows are not ours (a pair the operator adds by hand
                # now stays theirs).
                self._drop_owned(port_id, 'pair', pairs.added)
                self._drop_owned(port_id, 'sg', groups.added)
                raise PortRefused(self._refusal(port, want, exc)) from exc
            self._set_owned(port_id, 'pair', pairs.owned)
            self._set_owned(port_id, 'sg', groups.owned)
            LOG.info('Neutron port %s: pairs +%s -%s, security groups '
                     '+%s -%s%s', port_id, sorted(pairs.added),
                     sorted(pairs.removed), sorted(groups.added),
                     sorted(groups.removed),
                     ', port security off' if want.port_security_off and
                     'is_port_security_enabled' in attrs else '')
            return
        raise RuntimeError(f'port {port_id} kept changing during '
                           f'{CAS_ATTEMPTS} compare-and-set attempts')

    def _plan(self, port, want):
        """(update attributes, pairs Plan, groups Plan) for one port."""
        owned = self._owned(port.id)
        keep = neutron_pairs.Plan(None, set(), set(), set())
        if want.port_security_off:
            if port.is_port_security_enabled is False:
                return {}, keep, keep
            # Neutron refuses to turn port security off while the port has
            # security groups or pairs.
            return ({'is_port_security_enabled': False,
                     'security_group_ids': [],
                     'allowed_address_pairs': []}, keep, keep)
        if port.is_port_security_enabled is False:
            # Nothing filters this port (and Neutron refuses pairs on it).
            return {}, neutron_pairs.Plan(None, set(), set(), set()), keep
        pairs = neutron_pairs.plan_pairs(
            port.allowed_address_pairs or (), port.mac_address,
            owned['pair'], want.pairs)
        wanted_groups = set()
        if want.tunnel and want.pairs:
            wanted_groups.add(self.tunnels.ensure(port.project_id))
        groups = neutron_pairs.plan_groups(port.security_group_ids or (),
                                           owned['sg'], wanted_groups)
        attrs = {}
        if pairs.values is not None:
            attrs['allowed_address_pairs'] = pairs.values
        if groups.values is not None:
            attrs['security_group_ids'] = groups.values
        return attrs, pairs, groups

    def _refusal(self, port, want, exc):
        vips = ', '.join(sorted(want.pairs))
        return (f'Neutron refused to add VIP(s) {vips}'
                f' to the allowed_address_pairs of port {port.id} (project '
                f'{port.project_id}, port security on): HTTP {_status(exc)}'
                f' {_neutron_message(exc)}; the member\'s replies from the '
                f'VIP are dropped. Allow the controller\'s account to update '
                f'the port, add the pairs, or disable port security on it.')

    # --------------------------------------------------- bookkeeping
    def _owned(self, port_id):
        owned = {'pair': set(), 'sg': set()}
        with self.db.session() as s:
            for row in s.query(models.NeutronOwned).filter_by(
                    port_id=port_id):
                owned.setdefault(row.kind, set()).add(row.value)
        return owned

    def _add_owned(self, port_id, kind, values):
        with self.db.session() as s:
            for value in values:
                if s.get(models.NeutronOwned, (port_id, kind, value)):
                    continue
                try:
                    with s.begin_nested():
                        s.add(models.NeutronOwned(port_id=port_id,
                                                  kind=kind, value=value))
                except sa_exc.IntegrityError:
                    pass    # recorded meanwhile by another controller

    def _drop_owned(self, port_id, kind, values):
        if not values:
            return
        with self.db.session() as s:
            s.query(models.NeutronOwned).filter(
                models.NeutronOwned.port_id == port_id,
                models.NeutronOwned.kind == kind,
                models.NeutronOwned.value.in_(list(values))).delete()

    def _set_owned(self, port_id, kind, values):
        with self.db.session() as s:
            have = {value for (value,) in s.query(models.NeutronOwned.value)
                    .filter_by(port_id=port_id, kind=kind)}
        self._drop_owned(port_id, kind, have - set(values))
        self._add_owned(port_id, kind, set(values) - have)

    def _record_reasons(self, results):
        """Each member on an updated or checked port takes that port's
        verdict; the others keep theirs."""
        with self.db.session() as s:
            for row in s.query(models.NeutronMemberPort).filter(
                    models.NeutronMemberPort.port_id.in_(list(results))):
                reason = results[row.port_id]
                if reason != row.reason:
                    if reason:
                        LOG.error('member %s: operating status ERROR: its '
                                  'Neutron port refused the VIP pairs',
                                  row.member_id)
                    else:
                        LOG.info('member %s: Neutron port %s updated; its '
                                 'earlier refusal is cleared',
                                 row.member_id, row.port_id)
            for port_id, reason in results.items():
                s.query(models.NeutronMemberPort).filter_by(
                    port_id=port_id).update({'reason': reason})
