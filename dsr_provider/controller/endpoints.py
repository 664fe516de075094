"""RPC endpoints of dsr-controller.

ProviderEndpoint serves the provider driver's casts (namespace
octavia_dsr_provider); AgentEndpoint serves the agents (namespace
octavia_dsr_controller, see docs/agent-protocol.md).  Both only write the
database: the elected leader's Reporter does the rest.
"""

import logging
import time

import oslo_messaging as messaging
from sqlalchemy import exc as sa_exc

from amphora_agent import rpc as agent_rpc

LOG = logging.getLogger(__name__)

PROVIDER_NAMESPACE = 'octavia_dsr_provider'
API_VERSION = '1.0'


def _id(doc, key):
    return doc.get(key) or doc.get('id')


class ProviderEndpoint:
    target = messaging.Target(namespace=PROVIDER_NAMESPACE,
                              version=API_VERSION)

    def __init__(self, store):
        self.store = store

    def _do(self, what, func, *args, attempts=10):
        # The cast is already acknowledged: a transient database error must
        # not lose it, so retry (the store's writes are idempotent).
        for attempt in range(1, attempts + 1):
            try:
                generation = func(*args)
                LOG.info('%s -> generation %s', what, generation)
                return
            except LookupError as exc:
                # The parent vanished (deleted meanwhile): nothing to apply.
                LOG.warning('%s ignored: %s', what, exc)
                return
            except sa_exc.OperationalError as exc:
                LOG.warning('%s: database error (attempt %d/%d): %s', what,
                            attempt, attempts, exc)
                time.sleep(min(0.1 * 2 ** attempt, 5.0))
        LOG.error('%s lost after %d attempts', what, attempts)

    # load balancers
    def loadbalancer_create(self, ctxt, loadbalancer):
        self._do('loadbalancer_create', self.store.create_loadbalancer,
                 loadbalancer)

    def loadbalancer_update(self, ctxt, old_loadbalancer, new_loadbalancer):
        new = dict(new_loadbalancer)
        new.setdefault('loadbalancer_id',
                       _id(old_loadbalancer, 'loadbalancer_id'))
        self._do('loadbalancer_update', self.store.update_loadbalancer, new)

    def loadbalancer_delete(self, ctxt, loadbalancer, cascade=False):
        self._do('loadbalancer_delete', self.store.delete_loadbalancer,
                 _id(loadbalancer, 'loadbalancer_id'), cascade)

    # listeners
    def listener_create(self, ctxt, listener):
        self._do('listener_create', self.store.put_listener, listener)

    def listener_update(self, ctxt, old_listener, new_listener):
        merged = dict(old_listener)
        merged.update(new_listener)
        self._do('listener_update', self.store.put_listener, merged)

    def listener_delete(self, ctxt, listener):
        self._do('listener_delete', self.store.delete_listener,
                 _id(listener, 'listener_id'))

    # pools
    def pool_create(self, ctxt, pool):
        self._do('pool_create', self.store.put_pool, pool)

    def pool_update(self, ctxt, old_pool, new_pool):
        merged = dict(old_pool)
        merged.update(new_pool)
        merged.pop('members', None)
        merged.pop('healthmonitor', None)
        self._do('pool_update', self.store.put_pool, merged)

    def pool_delete(self, ctxt, pool):
        self._do('pool_delete', self.store.delete_pool, _id(pool, 'pool_id'))

    # members
    def member_create(self, ctxt, member):
        self._do('member_create', self.store.put_member, member)

    def member_update(self, ctxt, old_member, new_member):
        merged = dict(old_member)
        merged.update(new_member)
        self._do('member_update', self.store.put_member, merged)

    def member_delete(self, ctxt, member):
        self._do('member_delete', self.store.delete_member,
                 _id(member, 'member_id'))

    def member_batch_update(self, ctxt, pool_id, members):
        self._do('member_batch_update', self.store.batch_update_members,
                 pool_id, members)

    # health monitors
    def health_monitor_create(self, ctxt, healthmonitor):
        self._do('health_monitor_create', self.store.put_healthmonitor,
                 healthmonitor)

    def health_monitor_update(self, ctxt, old_healthmonitor,
                              new_healthmonitor):
        merged = dict(old_healthmonitor)
        merged.update(new_healthmonitor)
        self._do('health_monitor_update', self.store.put_healthmonitor,
                 merged)

    def health_monitor_delete(self, ctxt, healthmonitor):
        self._do('health_monitor_delete', self.store.delete_healthmonitor,
                 _id(healthmonitor, 'healthmonitor_id'))


class AgentEndpoint:
    target = messaging.Target(namespace=agent_rpc.CONTROLLER_NAMESPACE,
                              version=agent_rpc.API_VERSION)

    def __init__(self, store):
        self.store = store

    def get_config(self, ctxt, se_group, se_id):
        return self.store.snapshot(se_group)

    def report_state(self, ctxt, se_id, se_group, state):
        self.store.record_agent(
            se_id, se_group,
            applied_generation=state.get('applied_generation'),
            rejected_generation=state.get('rejected_generation'),
            error=state.get('error'))

    def report_member_status(self, ctxt, se_id, se_group, generation,
                             statuses):
        self.store.record_agent(se_id, se_group, member_statuses=statuses)

    def report_stats(self, ctxt, se_id, se_group, stats):
        self.store.record_agent(se_id, se_group, stats=stats)
