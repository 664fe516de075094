"""Octavia provider driver "dsr" (entry point octavia.api.drivers: dsr).

octavia-api builds one driver object per request and calls it before it
commits. The driver only validates (validation.py, flavors.py) and casts
the request to dsr-controller (rpc_api.py); it never waits for the
controller, which stores the desired state and reports provisioning and
operating status back through octavia-lib's DriverLibrary. The one thing
it asks on the way is local: a member's listener port, from
octavia-driver-agent's get socket (octavia_lookup.py).
"""

import functools

from octavia_lib.api.drivers import exceptions
from octavia_lib.api.drivers import provider_base as driver_base
from oslo_log import log as logging
from oslo_utils import excutils

from dsr_provider import flavors
from dsr_provider import octavia_lookup
from dsr_provider import opts
from dsr_provider import payloads
from dsr_provider import rpc_api
from dsr_provider import validation
from dsr_provider.validation import given
from dsr_provider import vip_port

LOG = logging.getLogger(__name__)


def _tier_checked(method):
    """A driver method that checks an object against its load balancer's
    tier.  When that tier could not be looked up the object is checked as
    tier 1 (_known_tier), and a refusal then may be wrong (a tier-2 load
    balancer takes HTTP listeners, L7 policies, ROUND_ROBIN pools): it is
    answered as an error to retry, not as a refusal of the option."""
    @functools.wraps(method)
    def checked(self, *args, **kwargs):
        self._unknown_tier = None
        try:
            return method(self, *args, **kwargs)
        except exceptions.UnsupportedOptionError as exc:
            if self._unknown_tier is None:
                raise
            message = (
                f'The tier of {self._unknown_tier} could not be looked '
                'up (octavia-driver-agent did not '
                'answer), and checked as tier 1 the request is refused: '
                f'{exc.user_fault_string} Retry once octavia-driver-agent '
                'answers: on a tier-2 load balancer it may be accepted.')
            raise exceptions.DriverError(
                user_fault_string=message,
                operator_fault_string=message) from exc
    return checked


class DSRProviderDriver(driver_base.ProviderDriver):

    def __init__(self, rpc=None, lookup=None, neutron=None, conf=None):
        """rpc: ControllerAPI; lookup: OctaviaLookup; neutron: an
        openstacksdk connection (default: created on first use)."""
        super().__init__()
        self._conf = opts.register_opts(conf)
        self._rpc = rpc or rpc_api.ControllerAPI(conf=self._conf)
        self._lookup = lookup or octavia_lookup.OctaviaLookup(
            conf=self._conf)
        self._neutron = neutron
        # {load balancer id: VIP port create_vip_port made for it}
        self._created_ports = {}
        # What the current request could not learn the tier of (_tier_checked).
        self._unknown_tier = None

    # --- load balancer -----------------------------------------------------

    def create_vip_port(self, loadbalancer_id, project_id, vip_dictionary,
                        additional_vip_dicts):
        # Octavia calls this first on every create, neutron_enabled or not,
        # and only this dictionary surely carries the request's QoS policy
        # and security groups (Octavia's network drivers drop them from the
        # VIP loadbalancer_create gets): refuse them before any allocation.
        validation.check_vip(vip_dictionary)
        if not self._conf.dsr_provider.neutron_enabled:
            raise exceptions.NotImplementedError(
                user_fault_string='The DSR provider does not create VIP '
                                  'ports; Octavia allocates them.',
                operator_fault_string='[dsr_provider] neutron_enabled is '
                                      'off: Octavia\'s network driver '
                                      'allocates the VIP port.')
        vip, extra = vip_port.create_vip_port(
            self._connection(), loadbalancer_id, project_id, vip_dictionary,
            additional_vip_dicts,
            se_addresses=self._conf.dsr_provider.se_addresses)
        if vip.get('octavia_owned'):
            # Octavia's rollback of a create refused later only touches its
            # database: loadbalancer_create deletes the port then. (Octavia
            # calls both on the one driver object it loads per request.)
            self._created_ports[loadbalancer_id] = vip['vip_port_id']
        return vip, extra

    def _connection(self):
        return self._neutron or vip_port.get_connection(self._conf)

    def loadbalancer_create(self, loadbalancer):
        lb_id = given(loadbalancer, 'loadbalancer_id')
        try:
            settings = flavors.resolve(
                given(loadbalancer, 'flavor'),
                given(loadbalancer, 'availability_zone'), self._conf)
            validation.check_graph(loadbalancer, tier=settings['tier'])
            self._rpc.loadbalancer_create(
                payloads.loadbalancer(loadbalancer, settings))
        except Exception:
            # Octavia rolls the load balancer back on any error here.
            with excutils.save_and_reraise_exception():
                self._delete_created_port(lb_id)
        self._created_ports.pop(lb_id, None)
        cache = self._lookup.cache
        cache.remember_tier(lb_id, settings['tier'])
        for listener in given(loadbalancer, 'listeners') or ():
            self._remember_listener(listener, lb_id)
        cache.remember_vips(lb_id, octavia_lookup.vip_addresses(loadbalancer))
        for pool in given(loadbalancer, 'pools') or ():
            cache.remember_pool(given(pool, 'pool_id'),
                                given(pool, 'listener_id'))
            cache.remember_pool_lb(given(pool, 'pool_id'), lb_id)

    def _delete_created_port(self, lb_id):
        port_id = self._created_ports.pop(lb_id, None)
        if port_id:
            vip_port.delete_port(self._connection(), port_id)

    # --- tiers ---------------------------------------------------------------

    def _known_tier(self, tier, what, object_id):
        if tier is octavia_lookup.UNKNOWN:
            # Tier 1 checks are the stricter: a tier-2 object is refused
            # (as an error to retry, _tier_checked) rather than a tier-1
            # one accepted unchecked.
            LOG.warning('load balancer of %s %s unknown: checked as '
                        'tier 1', what, object_id)
            self._unknown_tier = f'{what} {object_id}' if \
                what == 'load balancer' else \
                f'the load balancer of {what} {object_id}'
            return 1
        return tier

    def _lb_tier(self, lb_id):
        return self._known_tier(self._lookup.lb_tier(lb_id),
                                'load balancer', lb_id)

    def _listener_tier(self, listener_id):
        return self._known_tier(self._lookup.listener_tier(listener_id),
                                'listener', listener_id)

    def _pool_tier(self, pool_id):
        return self._known_tier(self._lookup.pool_tier(pool_id), 'pool',
                                pool_id)

    def _l7policy_tier(self, policy_id):
        return self._known_tier(self._lookup.l7policy_tier(policy_id),
                                'L7 policy', policy_id)

    def loadbalancer_update(self, old_loadbalancer, new_loadbalancer):
        validation.check_loadbalancer(new_loadbalancer)
        self._rpc.loadbalancer_update(
            payloads.loadbalancer(old_loadbalancer),
            payloads.loadbalancer(new_loadbalancer))

    def loadbalancer_delete(self, loadbalancer, cascade=False):
        self._rpc.loadbalancer_delete(payloads.loadbalancer(loadbalancer),
                                      cascade)

    def loadbalancer_failover(self, loadbalancer_id):
        raise exceptions.NotImplementedError(
            user_fault_string='A DSR load balancer has no amphora to fail '
                              'over: the service engines of its SE group '
                              'share the VIP (BGP ECMP) and a failed one is '
                              'withdrawn automatically.',
            operator_fault_string='loadbalancer failover is not applicable '
                                  'to the DSR provider.')

    # --- listener ----------------------------------------------------------

    @_tier_checked
    def listener_create(self, listener):
        tier = self._lb_tier(given(listener, 'loadbalancer_id'))
        validation.check_listener(listener, tier=tier)
        pool_id = given(listener, 'default_pool_id')
        if tier == 2 and given(listener, 'default_pool') is not None:
            validation.check_pool(given(listener, 'default_pool'), tier=2)
        if pool_id and tier == 1:
            pool = given(listener, 'default_pool')
            if pool is not None:
                validation.check_pool(
                    pool, listener_protocol=given(listener, 'protocol'))
            members = (given(pool, 'members') if pool is not None
                       else self._lookup.pool_members(pool_id))
            self._check_pool_for_listener(
                pool_id, given(listener, 'listener_id'),
                given(listener, 'protocol_port'), members)
        self._rpc.listener_create(payloads.to_payload(listener))
        self._remember_listener(listener, given(listener, 'loadbalancer_id'))

    @_tier_checked
    def listener_update(self, old_listener, new_listener):
        tier = self._lb_tier(given(old_listener, 'loadbalancer_id'))
        validation.check_listener(new_listener, tier=tier)
        pool_id = given(new_listener, 'default_pool_id')
        if tier == 1 and pool_id and \
                pool_id != given(old_listener, 'default_pool_id'):
            self._check_pool_for_listener(
                pool_id, given(old_listener, 'listener_id'),
                given(old_listener, 'protocol_port'),
                self._lookup.pool_members(pool_id))
        self._rpc.listener_update(payloads.to_payload(old_listener),
                                  payloads.to_payload(new_listener))
        if pool_id != given(old_listener, 'default_pool_id'):
            cache = self._lookup.cache
            cache.forget_pool(given(old_listener, 'default_pool_id'))
            cache.remember_pool(pool_id, given(old_listener, 'listener_id'))

    def listener_delete(self, listener):
        self._rpc.listener_delete(payloads.to_payload(listener))
        self._lookup.cache.forget_listener(given(listener, 'listener_id'))

    def _remember_listener(self, listener, lb_id=None):
        """Learn the listener's port and its default pool's binding, so
        that member creates skip the driver-agent round trips."""
        listener_id = given(listener, 'listener_id')
        cache = self._lookup.cache
        cache.remember_listener(listener_id, given(listener, 'protocol_port'))
        cache.remember_pool(given(listener, 'default_pool_id'), listener_id)
        cache.remember_listener_lb(listener_id, lb_id)
        cache.remember('listener_protocol', listener_id,
                       given(listener, 'protocol'))

    def _check_pool_for_listener(self, pool_id, listener_id, port, members):
        """The pool becomes the default pool of a listener on port."""
        ports = [port]
        other = self._lookup.pool_listener_port(
            pool_id, ignore_listener_id=listener_id)
        if other not in (None, octavia_lookup.UNKNOWN):
            ports.append(other)
        if members is octavia_lookup.UNKNOWN:
            LOG.warning('members of pool %s unknown: the controller checks '
                        'their ports (it refuses the listener if one is on '
                        'another port)', pool_id)
            members = ()
        validation.check_pool_ports(pool_id, ports, members)

    # --- pool --------------------------------------------------------------

    @_tier_checked
    def pool_create(self, pool):
        tier = self._lb_tier(given(pool, 'loadbalancer_id'))
        validation.check_pool(pool, tier=tier)
        monitor = given(pool, 'healthmonitor')
        if monitor:
            validation.check_health_monitor(monitor, tier=tier)
        self._lookup.cache.remember_pool_lb(given(pool, 'pool_id'),
                                            given(pool, 'loadbalancer_id'))
        members = given(pool, 'members')
        if members:
            port = self._listener_port(pool) if tier == 1 else None
            vips = self._pool_vips(given(pool, 'pool_id'))
            for member in members:
                validation.check_member(member, vips)
                validation.check_member_port(member, port)
        self._rpc.pool_create(payloads.to_payload(pool))
        self._lookup.cache.remember_pool(given(pool, 'pool_id'),
                                         given(pool, 'listener_id'))

    @_tier_checked
    def pool_update(self, old_pool, new_pool):
        validation.check_pool(new_pool, old_pool=old_pool,
                              tier=self._lb_tier(given(old_pool,
                                                       'loadbalancer_id')))
        self._rpc.pool_update(payloads.to_payload(old_pool),
                              payloads.to_payload(new_pool))

    def pool_delete(self, pool):
        self._rpc.pool_delete(payloads.to_payload(pool))
        self._lookup.cache.forget_pool(given(pool, 'pool_id'))

    def _listener_port(self, pool):
        listener_id = given(pool, 'listener_id')
        if not listener_id:
            return None
        port = self._lookup.listener_port(listener_id)
        return None if port is octavia_lookup.UNKNOWN else port

    # --- member ------------------------------------------------------------

    def _pool_port(self, pool_id):
        port = self._lookup.pool_listener_port(pool_id)
        if port is octavia_lookup.UNKNOWN:
            LOG.warning('listener port of pool %s unknown: the controller '
                        'checks member ports (it rejects a member on another '
                        'port than its listener\'s)', pool_id)
            return None
        return port

    def _pool_vips(self, pool_id):
        """The VIPs a member of the pool must not use (member address
        rules); () when they cannot be told -- the agents reject such a
        member alone then."""
        vips = self._lookup.pool_vips(pool_id)
        if vips is octavia_lookup.UNKNOWN:
            LOG.warning('VIPs of the load balancer of pool %s unknown: '
                        'members are checked against them by the agents',
                        pool_id)
            return ()
        return vips

    def _member_port(self, pool_id):
        """The port members of the pool must use (tier 1: the listener's;
        None: any -- tier 2 translates ports)."""
        if self._pool_tier(pool_id) == 2:
            return None
        return self._pool_port(pool_id)

    @_tier_checked
    def member_create(self, member):
        # The VIP lookup first: on a cache miss it also learns the pool's
        # listener and load balancer, which the port check needs.
        pool_id = given(member, 'pool_id')
        validation.check_member(member, self._pool_vips(pool_id))
        validation.check_member_port(member, self._member_port(pool_id))
        self._rpc.member_create(payloads.to_payload(member))

    def member_update(self, old_member, new_member):
        # Octavia does not change a member's address or port on update;
        # weight, backup and the monitor address/port can change.
        vips = ()
        if given(new_member, 'monitor_address'):
            vips = self._pool_vips(given(old_member, 'pool_id'))
        validation.check_member(new_member, vips)
        self._rpc.member_update(payloads.to_payload(old_member),
                                payloads.to_payload(new_member))

    def member_delete(self, member):
        self._rpc.member_delete(payloads.to_payload(member))

    @_tier_checked
    def member_batch_update(self, pool_id, members):
        vips = self._pool_vips(pool_id)
        port = self._member_port(pool_id)
        for member in members:
            validation.check_member(member, vips)
            validation.check_member_port(member, port)
        self._rpc.member_batch_update(
            pool_id, [payloads.to_payload(m) for m in members])

    # --- health monitor ----------------------------------------------------

    @_tier_checked
    def health_monitor_create(self, healthmonitor):
        validation.check_health_monitor(
            healthmonitor,
            tier=self._pool_tier(given(healthmonitor, 'pool_id')))
        self._rpc.health_monitor_create(payloads.to_payload(healthmonitor))

    @_tier_checked
    def health_monitor_update(self, old_healthmonitor, new_healthmonitor):
        validation.check_health_monitor(
            new_healthmonitor, old_hm=old_healthmonitor,
            tier=self._pool_tier(given(old_healthmonitor, 'pool_id')))
        self._rpc.health_monitor_update(
            payloads.to_payload(old_healthmonitor),
            payloads.to_payload(new_healthmonitor))

    def health_monitor_delete(self, healthmonitor):
        self._rpc.health_monitor_delete(payloads.to_payload(healthmonitor))

    # --- L7: tier 2 only (L7 service engines) ------------------------------

    def _l7_tier2(self, tier, what):
        if tier != 2:
            validation.refuse_l7(what)

    def _l7policy_listener(self, listener_id):
        """An L7 policy's listener must be one HAProxy sees requests on."""
        protocol = self._lookup.listener_protocol(listener_id)
        if protocol is octavia_lookup.UNKNOWN:
            message = (f'The protocol of listener {listener_id} could not '
                       'be looked up (octavia-driver-agent did not answer): '
                       'L7 policies are accepted on HTTP and '
                       'TERMINATED_HTTPS listeners only. Retry once '
                       'octavia-driver-agent answers.')
            raise exceptions.DriverError(user_fault_string=message,
                                         operator_fault_string=message)
        validation.check_l7policy_listener(protocol)

    @_tier_checked
    def l7policy_create(self, l7policy):
        listener_id = given(l7policy, 'listener_id')
        self._l7_tier2(self._listener_tier(listener_id), 'L7 policies')
        self._l7policy_listener(listener_id)
        validation.check_l7policy(l7policy)
        self._rpc.l7policy_create(payloads.to_payload(l7policy))
        self._lookup.cache.remember_policy_listener(
            given(l7policy, 'l7policy_id'), listener_id)

    @_tier_checked
    def l7policy_update(self, old_l7policy, new_l7policy):
        listener_id = given(old_l7policy, 'listener_id')
        self._l7_tier2(self._listener_tier(listener_id), 'L7 policies')
        self._l7policy_listener(listener_id)
        validation.check_l7policy(new_l7policy)
        self._rpc.l7policy_update(payloads.to_payload(old_l7policy),
                                  payloads.to_payload(new_l7policy))

    # Deletes need no tier check: an L7 object exists only on tier 2, and
    # an unknown tier (lookup down) must not block its removal.

    def l7policy_delete(self, l7policy):
        self._rpc.l7policy_delete(payloads.to_payload(l7policy))

    @_tier_checked
    def l7rule_create(self, l7rule):
        self._l7_tier2(self._l7policy_tier(given(l7rule, 'l7policy_id')),
                       'L7 rules')
        validation.check_l7rule(l7rule)
        self._rpc.l7rule_create(payloads.to_payload(l7rule))

    @_tier_checked
    def l7rule_update(self, old_l7rule, new_l7rule):
        self._l7_tier2(self._l7policy_tier(given(old_l7rule,
                                                 'l7policy_id')),
                       'L7 rules')
        validation.check_l7rule(new_l7rule)
        self._rpc.l7rule_update(payloads.to_payload(old_l7rule),
                                payloads.to_payload(new_l7rule))

    def l7rule_delete(self, l7rule):
        self._rpc.l7rule_delete(payloads.to_payload(l7rule))

    # --- flavors and availability zones ------------------------------------

    def get_supported_flavor_metadata(self):
        return dict(flavors.FLAVOR_METADATA)

    def validate_flavor(self, flavor_metadata):
        flavors.validate_flavor(flavor_metadata, self._conf)

    def get_supported_availability_zone_metadata(self):
        return dict(flavors.AVAILABILITY_ZONE_METADATA)

    def validate_availability_zone(self, availability_zone_metadata):
        flavors.validate_availability_zone(availability_zone_metadata,
                                           self._conf)
