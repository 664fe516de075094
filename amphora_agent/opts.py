"""oslo.config options of the SE agent package, declared in one place."""

from oslo_config import cfg

from amphora_agent.dataplane import maglev

dataplane_opts = [
    cfg.StrOpt('pin_dir', default='/sys/fs/bpf/octavia-dsr',
               help='bpffs directory holding the pinned SE program and maps; '
                    'an agent restart reuses them, so traffic is not '
                    'disturbed.'),
    cfg.StrOpt('interface',
               help='Interface the SE program is attached to (XDP).'),
    cfg.StrOpt('xdp_mode', default='auto',
               choices=['auto', 'native', 'generic'],
               help='XDP attach mode: native (driver) where supported, '
                    'generic (skb) otherwise; auto tries native first.'),
    cfg.IntOpt('max_listeners', default=64, min=1,
               help='Listener capacity. Memory for the rings is '
                    'max_listeners x ring_size x 4 bytes.'),
    cfg.IntOpt('ring_size', default=maglev.DEFAULT_RING_SIZE, min=3,
               help='Maglev ring slots per listener; must be prime and '
                    'comfortably larger than 100 x the largest member '
                    'count for even balance.'),
    cfg.IntOpt('max_members', default=65535, min=1,
               help='Member capacity over all listeners.'),
    cfg.IntOpt('conn_table_size', default=262144, min=1024,
               help='Entries of the LRU connection table that keeps '
                    'established flows on their member.'),
    cfg.StrOpt('decap_pin_dir', default='/sys/fs/bpf/octavia-dsr/decap',
               help='bpffs directory of the member-side decap program.'),
]


def register_opts(conf):
    conf.register_opts(dataplane_opts, group='dataplane')


def list_opts():
    return [('dataplane', dataplane_opts)]
