"""The change API: provider driver -> dsr-controller, version 1.0.

Every change is published as an oslo.messaging notification, not an RPC
cast: RPC servers acknowledge a message *before* dispatching it (at most
once), so a controller killed between taking a change off the queue and
committing it would lose it and Octavia would keep the objects PENDING_*.
A notification listener acknowledges only after its endpoint returns, i.e.
after the change is committed; a controller that dies first leaves the
message unacknowledged and RabbitMQ redelivers it to another (or the
restarted) controller.  The controller's writes are idempotent, so a
redelivery after the commit is harmless.

Wire format: topic "octavia-dsr-changes", priority info, on octavia-api's
control exchange (Octavia sets "octavia"; the controller's
[dsr_controller] provider_exchange must match).  event_type is the method
name, the payload {"version": "1.0", "args": {<keyword arguments>}} with
plain dicts (dsr_provider/payloads.py).  The driver never waits for the
controller:

    loadbalancer_create(loadbalancer)
    loadbalancer_update(old_loadbalancer, new_loadbalancer)
    loadbalancer_delete(loadbalancer, cascade)
    listener_create(listener)
    listener_update(old_listener, new_listener)
    listener_delete(listener)
    pool_create(pool)
    pool_update(old_pool, new_pool)
    pool_delete(pool)
    member_create(member)
    member_update(old_member, new_member)
    member_delete(member)
    member_batch_update(pool_id, members)
    health_monitor_create(healthmonitor)
    health_monitor_update(old_healthmonitor, new_healthmonitor)
    health_monitor_delete(healthmonitor)
    l7policy_create(l7policy)                     (tier 2 only)
    l7policy_update(old_l7policy, new_l7policy)
    l7policy_delete(l7policy)
    l7rule_create(l7rule)
    l7rule_update(old_l7rule, new_l7rule)
    l7rule_delete(l7rule)

Signed (docs/security.md, "Provider driver to controller"): the
notification's context carries ``dsr_auth`` (dsr_wire/auth.py) over
``{method, args, ts, nonce}`` with the driver's key ([dsr_provider]
signing_key); a controller with authentication on applies only changes a
key of its [dsr_controller] provider_keys_dir signed, within
tombstone_ttl, with a nonce it has not committed.

This module is the contract both sides import: the driver publishes with
dsr_provider/rpc_api.py, the controller listens in
dsr_provider/controller/endpoints.py.
"""

TOPIC = 'octavia-dsr-changes'
PUBLISHER_ID = 'octavia-dsr-provider'
API_VERSION = '1.0'

METHODS = (
    'loadbalancer_create', 'loadbalancer_update', 'loadbalancer_delete',
    'listener_create', 'listener_update', 'listener_delete',
    'pool_create', 'pool_update', 'pool_delete',
    'member_create', 'member_update', 'member_delete',
    'member_batch_update',
    'health_monitor_create', 'health_monitor_update',
    'health_monitor_delete',
    'l7policy_create', 'l7policy_update', 'l7policy_delete',
    'l7rule_create', 'l7rule_update', 'l7rule_delete',
)


def payload(**kwargs):
    """The notification payload of one change."""
    return {'version': API_VERSION, 'args': kwargs}
