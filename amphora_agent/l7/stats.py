"""HAProxy's stats socket -> what Octavia's amphora reports.

The query is Octavia's own (octavia.amphorae.backends.utils.haproxy_query,
what the amphora's health daemon runs); the shape and the status mapping
follow the amphora's heartbeat and the health manager that reads it
(octavia.amphorae.backends.health_daemon.health_daemon.build_stats_message,
octavia.amphorae.drivers.health.heartbeat_udp): listener OPEN -> ONLINE,
FULL -> DEGRADED; backend UP -> ONLINE, DOWN -> ERROR; member UP -> ONLINE,
DOWN -> ERROR, DRAIN -> DRAINING, MAINT -> OFFLINE, "no check" ->
NO_MONITOR.  Counters are HAProxy's absolute values since the worker
started (a reload starts them again, as on an amphora).
"""

LISTENER_STATUS = {'OPEN': 'ONLINE', 'FULL': 'DEGRADED'}
POOL_STATUS = {'UP': 'ONLINE', 'DOWN': 'ERROR'}
MEMBER_STATUS = {'UP': 'ONLINE', 'DOWN': 'ERROR', 'DRAIN': 'DRAINING',
                 'MAINT': 'OFFLINE', 'no check': 'NO_MONITOR'}
# Octavia's listener statistics names <- HAProxy's CSV columns.
COUNTERS = {'bytes_in': 'bin', 'bytes_out': 'bout',
            'active_connections': 'scur', 'total_connections': 'stot',
            'request_errors': 'ereq'}


def member_operating_status(status):
    """HAProxy's server status ("UP", "DOWN 1/3", "no check", ...) ->
    Octavia's member operating status (None: transitional/unknown)."""
    for prefix in ('UP', 'DOWN'):
        if status.startswith(prefix):
            return MEMBER_STATUS[prefix]
    return MEMBER_STATUS.get(status)


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def summarize(rows, pool_status):
    """show stat rows + get_pool_status() -> {'listeners': {id: {...}},
    'pools': {pool id: {...}}}.  A pool several listeners use is reported
    once (the first backend seen), as the health manager does."""
    listeners, pools = {}, {}
    for row in rows:
        if row.get('svname') != 'FRONTEND':
            continue
        listeners[row['pxname']] = {
            'status': row['status'],
            'operating_status': LISTENER_STATUS.get(row['status']),
            'stats': {name: _int(row.get(col))
                      for name, col in COUNTERS.items()}}
    for name, backend in pool_status.items():
        pool_id = backend.get('pool_uuid') or name.split(':')[0]
        if pool_id in pools:
            continue
        pools[pool_id] = {
            'status': backend.get('status'),
            'operating_status': POOL_STATUS.get(backend.get('status')),
            'members': {mid: {'status': st,
                              'operating_status':
                                  member_operating_status(st)}
                        for mid, st in backend['members'].items()}}
    return {'listeners': listeners, 'pools': pools}


def collect(stats_socket):
    """Query a running HAProxy (raises OSError-based errors when it is
    not answering)."""
    from octavia.amphorae.backends.utils import haproxy_query
    query = haproxy_query.HAProxyQuery(stats_socket)
    return summarize(query.show_stat(), query.get_pool_status())
