"""dsrctl: operate an SE dataplane by hand (and from the agent's tests).

Runs in the SE's network namespace; --netns NAME enters one first (setns,
unlike `ip netns exec`, keeps /sys/fs/bpf visible).  Every change is applied
through the same idempotent Dataplane.apply() the agent uses: the command
reads the live state from the pinned maps, changes it, validates the whole
result and only then writes, so bad input changes nothing.

Start-up is kept small because scripts call dsrctl many times: --help
imports nothing of the dataplane, a command imports only what it needs
(no pyroute2 outside next-hop resolution), and oslo.config is read only
with --config-file (bench/dsrctl_bench.py, docs/benchmarks.md).
"""

import argparse
import json
import signal
import sys

# Imported by main() after parsing (see _import_dataplane).
dp_mod = decap_mod = model = None

# The defaults of dataplane.DEFAULT_PIN_DIR and decap.DEFAULT_PIN_DIR,
# spelled here so that --help imports neither (a unit test keeps them
# equal).
DEFAULT_PIN_DIR = '/sys/fs/bpf/octavia-dsr'
DEFAULT_DECAP_PIN_DIR = '/sys/fs/bpf/octavia-dsr/decap'
CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = '/var/run/netns'


class CommandError(Exception):
    pass


def _import_dataplane():
    global dp_mod, decap_mod, model
    from amphora_agent.dataplane import dataplane as dp_mod
    from amphora_agent.dataplane import decap as decap_mod
    from amphora_agent.dataplane import model


def setns(name):
    """Move this process into network namespace ``name`` (a name under
    /var/run/netns or a path), never creating it.

    pyroute2.netns.setns(name, flags=0) does the same, but importing
    pyroute2 costs about 0.25 s, most of a read-only call's budget."""
    import ctypes
    import os
    path = name if os.path.dirname(name) else os.path.join(NETNS_RUN_DIR,
                                                           name)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
    finally:
        os.close(fd)


def _endpoint(text):
    """'203.0.113.5:40000' or '[2001:db8::5]:40000'."""
    host, sep, port = text.rpartition(':')
    if not sep:
        raise model.InvalidConfig(f'source {text!r} is not IP:PORT')
    return model.parse_address(host, 'source'), model.parse_port(port)


def _limits(args):
    if not any(getattr(args, n, None) for n in (
            'max_listeners', 'ring_size', 'max_members', 'conn_table_size',
            'ring_slots')):
        return None
    base = dp_mod.Limits()
    return dp_mod.Limits(
        max_listeners=args.max_listeners or base.max_listeners,
        ring_size=args.ring_size or base.ring_size,
        ring_slots=args.ring_slots or base.ring_slots,
        max_reals=(args.max_members + 1) if args.max_members
        else base.max_reals,
        conn_table_size=args.conn_table_size or base.conn_table_size)


def _open(args, **kwargs):
    kwargs.setdefault('create', False)
    return dp_mod.Dataplane.open(args.pin_dir, **kwargs)


def _change(args, mutate):
    with _open(args) as dp:
        state = dp.read_state()
        mutate(state)
        changes = dp.apply(state)
    _print(args, changes, lambda c: ', '.join(
        f'{k}={v}' for k, v in c.items() if v) or 'no change')


def _print(args, data, text):
    if getattr(args, 'json', False):
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(text(data))


def cmd_attach(args):
    with _open(args, limits=_limits(args), reload=args.reload,
               create=True, flood_guard_rate=args.flood_guard_rate) as dp:
        mode = dp.attach(args.interface, args.mode)
    print(f'attached to {args.interface} ({mode})')


def cmd_detach(args):
    detached = dp_mod.Dataplane.detach(args.interface)
    print(f'detached from {args.interface}' if detached
          else f'nothing attached to {args.interface}')


def cmd_reset(args):
    # By name, without opening them: also pins of another release.
    removed = dp_mod.Dataplane.remove_pins(args.pin_dir)
    print(f'removed {len(removed)} pins under {args.pin_dir}' if removed
          else f'nothing pinned under {args.pin_dir}')


def cmd_listener(args):
    key = model.ListenerKey.parse(args.listener)

    def mutate(state):
        if args.action == 'add':
            if key in state.listeners:
                raise CommandError(f'listener {key} already exists')
            state.listeners[key] = model.ListenerSpec(
                key, model.parse_algorithm(args.algorithm or
                                           'SOURCE_IP_PORT'),
                model.parse_encap(args.encap or 'ipip'),
                conn_limit=model.parse_conn_limit(args.connection_limit),
                allowed_cidrs=_cidrs(args))
            return
        if key not in state.listeners:
            raise CommandError(f'listener {key} does not exist')
        if args.action == 'del':
            del state.listeners[key]
            return
        spec = state.listeners[key]
        if args.algorithm:
            spec.algorithm = model.parse_algorithm(args.algorithm)
        if args.encap:
            spec.encap = model.parse_encap(args.encap)
        if args.connection_limit is not None:
            spec.conn_limit = model.parse_conn_limit(args.connection_limit)
        if args.allowed_cidr or args.any_source:
            spec.allowed_cidrs = _cidrs(args)
    _change(args, mutate)


def _cidrs(args):
    if args.any_source and args.allowed_cidr:
        raise CommandError('give --allowed-cidr or --any-source, not both')
    return model.parse_cidrs(args.allowed_cidr) if args.allowed_cidr \
        else None


def cmd_member(args):
    key = model.ListenerKey.parse(args.listener)
    address = model.parse_address(args.address, 'member address')

    def mutate(state):
        spec = state.listeners.get(key)
        if spec is None:
            raise CommandError(f'listener {key} does not exist')
        if args.action == 'add':
            if address in spec.members:
                raise CommandError(f'member {address} already in {key}')
            spec.members[address] = model.Member(
                address, model.parse_weight(
                    1 if args.weight is None else args.weight),
                args.backup)
            return
        if address not in spec.members:
            raise CommandError(f'member {address} is not in {key}')
        if args.action == 'del':
            del spec.members[address]
        elif args.weight is not None:
            spec.members[address].weight = model.parse_weight(args.weight)
    _change(args, mutate)


def cmd_tunnel_source(args):
    if not args.ipv4 and not args.ipv6:
        raise CommandError('give --ipv4 and/or --ipv6')

    def mutate(state):
        if args.ipv4:
            address = model.parse_address(args.ipv4, 'IPv4 tunnel source')
            if address.version != 4:
                raise model.InvalidConfig(
                    f'--ipv4 {args.ipv4} is not an IPv4 address')
            state.tunnel_source4 = address
        if args.ipv6:
            address = model.parse_address(args.ipv6, 'IPv6 tunnel source')
            if address.version != 6:
                raise model.InvalidConfig(
                    f'--ipv6 {args.ipv6} is not an IPv6 address')
            state.tunnel_source6 = address
    _change(args, mutate)


def cmd_apply(args):
    try:
        with open(args.file) as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise CommandError(f'cannot read {args.file}: {exc}')
    desired = model.DesiredState.from_dict(data)
    with _open(args) as dp:
        changes = dp.apply(desired)
    _print(args, changes, lambda c: ', '.join(
        f'{k}={v}' for k, v in c.items() if v) or 'no change')


def cmd_show(args):
    import dataclasses
    with _open(args) as dp:
        state = dp.read_state().to_dict()
        state['limits'] = dataclasses.asdict(dp.limits)
        state['flood_guard_rate'] = dp.config().flood_rate

    def text(s):
        lines = [f"tunnel source: ipv4={s['tunnel_source']['ipv4']} "
                 f"ipv6={s['tunnel_source']['ipv6']}",
                 'flood guard: '
                 + (f"{s['flood_guard_rate']} new flows/s per CPU"
                    if s['flood_guard_rate'] else 'off')]
        for lst in s['listeners']:
            extra = ''
            if lst['connection_limit']:
                extra += f" connection_limit={lst['connection_limit']}"
            if lst['allowed_cidrs'] is not None:
                extra += (' allowed_cidrs='
                          + (','.join(lst['allowed_cidrs']) or '(none)'))
            lines.append(f"listener {lst['listener']} "
                         f"algorithm={lst['algorithm']} "
                         f"encap={lst['encap']}{extra}")
            for m in lst['members']:
                lines.append(f"  member {m['address']} weight={m['weight']}")
        return '\n'.join(lines)
    _print(args, state, text)


def cmd_stats(args):
    with _open(args) as dp:
        stats = dp.stats()

    def text(s):
        lines = ['se: ' + ' '.join(f'{k}={v}' for k, v in s['se'].items()
                                   if v)]
        for lst in s['listeners']:
            lines.append('listener ' + ' '.join(
                f'{k}={v}' for k, v in lst.items()))
        for m in s['members']:
            lines.append('member ' + ' '.join(f'{k}={v}'
                                              for k, v in m.items()))
        lines.append(f"conn_table_entries={s['conn_table_entries']}")
        return '\n'.join(lines)
    _print(args, stats, text)


def cmd_lookup(args):
    key = model.ListenerKey.parse(args.listener)
    source, port = _endpoint(args.src)
    with _open(args) as dp:
        answer = dp_mod.lookup(dp, key, source, port)
    _print(args, answer, lambda a: ' '.join(f'{k}={v}'
                                            for k, v in a.items()))


def cmd_nexthop_refresh(args):
    with _open(args) as dp:
        count = dp.refresh_nexthops()
    print(f'{count} next hop(s) resolved')


def _decap_change(args):
    if args.action == 'detach':
        detached = decap_mod.Decap.detach(args.interface)
        print(f'detached from {args.interface}' if detached
              else f'nothing attached to {args.interface}')
        if args.purge:
            decap_mod.remove_pins(args.decap_pin_dir)
        return
    with decap_mod.Decap.open(args.decap_pin_dir,
                              reload=getattr(args, 'reload', False)) as d:
        addresses = [model.parse_address(a, 'tunnel address')
                     for a in args.address]
        sources = [model.parse_address(a, 'SE source') for a in args.source]
        # Sources first: no address is restricted before them.
        d.set_sources(sources)
        d.set_addresses(addresses)
        d.attach(args.interface)
        print(f'decap attached to {args.interface} for '
              + ', '.join(map(str, addresses)) + ' from '
              + (', '.join(map(str, sources)) or 'any source'))


def cmd_decap(args):
    reload = getattr(args, 'reload', False)
    change = args.action in ('attach', 'detach')
    if not (change or reload):
        # A read changes nothing, as dsrctl show on the SE: without the
        # lock, and with no pins (never loaded, or removed meanwhile by a
        # teardown) an error, not a load.
        with decap_mod.Decap.open(args.decap_pin_dir, create=False) as d:
            return _decap_read(args, d)
    # A change reads, then writes, the maps, and a load writes the pins:
    # under the lock dsr-member setups take.
    with decap_mod.locked(args.decap_pin_dir):
        if change:
            return _decap_change(args)
        with decap_mod.Decap.open(args.decap_pin_dir, reload=reload) as d:
            return _decap_read(args, d)


def _decap_read(args, d):
    if args.action == 'show':
        _print(args, _decap_document(d), _decap_text)
    else:
        _print(args, d.stats(), lambda s: ' '.join(
            f'{k}={v}' for k, v in s.items()))


def _decap_document(d):
    """What the decap does and who asked for it: the dsr-member setups
    (or dsrctl) giving each address and source, and which addresses are
    restricted to the SE sources (a shared address is open while any of
    its setups gives it open)."""
    # One read of each map: a setup changing them meanwhile cannot make
    # the lists and the counts disagree.
    counts, sources = d.address_counts(), d.source_counts()
    return {
        'addresses': list(counts),
        'sources': list(sources),
        'restricted': [a for a, (_, _, r) in counts.items() if r],
        'address_setups': {a: {'setups': n, 'open': k}
                           for a, (n, k, _) in counts.items()},
        'source_setups': sources,
    }


def _decap_text(doc):
    restricted = set(doc['restricted'])
    lines = [' '.join(doc['addresses']) + ' from '
             + (' '.join(doc['sources']) or 'any source')]
    for address in doc['addresses']:
        n = doc['address_setups'][address]
        mode = ('SE sources only' if address in restricted
                else 'any source')
        lines.append(f"  {address}: {mode}; {n['setups']} setup(s), "
                     f"{n['open']} of them open")
    for source in doc['sources']:
        lines.append(f"  source {source}: "
                     f"{doc['source_setups'][source]} setup(s)")
    return '\n'.join(lines)


def _apply_config_defaults(args, parser):
    """Fill options not given on the command line from oslo.config (only
    with --config-file: without it the options' defaults are known)."""
    if not args.config_file:
        args.pin_dir = args.pin_dir or DEFAULT_PIN_DIR
        args.decap_pin_dir = args.decap_pin_dir or DEFAULT_DECAP_PIN_DIR
        return
    from oslo_config import cfg

    from amphora_agent import opts

    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    try:
        conf([], project='octavia-dsr', default_config_files=(
            [args.config_file] if args.config_file else []))
    except cfg.Error as exc:
        parser.exit(2, f'dsrctl: error: {exc}\n')
    dataplane = conf.dataplane
    args.pin_dir = args.pin_dir or dataplane.pin_dir
    args.decap_pin_dir = args.decap_pin_dir or dataplane.decap_pin_dir
    if args.command == 'attach' and args.config_file:
        args.max_listeners = args.max_listeners or dataplane.max_listeners
        args.ring_size = args.ring_size or dataplane.ring_size
        args.ring_slots = args.ring_slots or dataplane.ring_slots
        args.max_members = args.max_members or dataplane.max_members
        args.conn_table_size = (args.conn_table_size
                                or dataplane.conn_table_size)
        if args.flood_guard_rate is None:
            args.flood_guard_rate = dataplane.flood_guard_rate


# Global options that take a value, and the commands (build_parser adds
# them; a unit test keeps this list equal to what it adds).
_GLOBAL_VALUE_OPTIONS = ('--netns', '--config-file', '--pin-dir',
                         '--decap-pin-dir')
COMMANDS = ('attach', 'detach', 'reset', 'listener', 'member',
            'tunnel-source', 'apply', 'show', 'stats', 'lookup', 'nexthop',
            'decap')


def _command_of(argv):
    """The command argv runs, or None (help, an error, an abbreviated
    option: the full parser answers)."""
    args = iter(argv)
    for arg in args:
        if arg in _GLOBAL_VALUE_OPTIONS:
            next(args, None)
        elif arg.split('=', 1)[0] not in _GLOBAL_VALUE_OPTIONS:
            return arg if arg in COMMANDS else None
    return None


class _Skipped:
    """The sub-parser of a command not being run: not built (argparse
    formats every argument as it is added; all of them made up most of
    the parser's cost)."""

    def add_argument(self, *args, **kwargs):
        pass

    def set_defaults(self, **kwargs):
        pass


class _Only:
    def __init__(self, subparsers, command):
        self._subparsers = subparsers
        self._command = command

    def add_parser(self, name, **kwargs):
        if name != self._command:
            return _Skipped()
        return self._subparsers.add_parser(name, **kwargs)


def build_parser(only=None):
    """The parser; with ``only``, the sub-parser of that command alone."""
    parser = argparse.ArgumentParser(
        prog='dsrctl', description='Operate an octavia-dsr SE dataplane.')
    parser.add_argument('--netns', help='network namespace to enter first')
    parser.add_argument('--config-file',
                        help='agent configuration; its [dataplane] options '
                        'are the defaults of the options below')
    parser.add_argument('--pin-dir',
                        help='bpffs directory of the SE (default: '
                        f'[dataplane] pin_dir, {DEFAULT_PIN_DIR})')
    parser.add_argument('--decap-pin-dir',
                        help='bpffs directory of the member decap program '
                        f'(default: [dataplane] decap_pin_dir, '
                        f'{DEFAULT_DECAP_PIN_DIR})')
    sub = parser.add_subparsers(dest='command', required=True)
    if only is not None:
        sub = _Only(sub, only)

    p = sub.add_parser('attach', help='load (if needed) and attach the SE '
                       'program to an interface')
    p.add_argument('interface')
    p.add_argument('--mode', default='auto',
                   choices=['auto', 'native', 'generic'])
    p.add_argument('--reload', action='store_true',
                   help='load the program again (upgrade), keeping the maps')
    p.add_argument('--max-listeners', type=int)
    p.add_argument('--ring-size', type=int)
    p.add_argument('--ring-slots', type=int,
                   help='slots of the rings map (default max-listeners x '
                        'ring-size)')
    p.add_argument('--max-members', type=int)
    p.add_argument('--conn-table-size', type=int)
    p.add_argument('--flood-guard-rate', type=int, metavar='FLOWS',
                   help='new flows remembered per second per CPU, 0 = no '
                        'limit (default: [dataplane] flood_guard_rate of '
                        '--config-file, else the live value; a new '
                        'dataplane starts without a limit)')
    p.set_defaults(func=cmd_attach)

    p = sub.add_parser('detach', help='detach the SE program')
    p.add_argument('interface')
    p.set_defaults(func=cmd_detach)

    p = sub.add_parser('reset', help='remove the pinned program and maps')
    p.set_defaults(func=cmd_reset)

    p = sub.add_parser('listener', help='add, change or delete a listener')
    p.add_argument('action', choices=['add', 'set', 'del'])
    p.add_argument('listener', help='VIP:PORT/PROTO, e.g. '
                   '198.51.100.10:80/tcp or [2001:db8::10]:53/udp')
    p.add_argument('--algorithm', help='SOURCE_IP_PORT (default) or '
                   'SOURCE_IP')
    p.add_argument('--encap', help='ipip (default) or gre')
    p.add_argument('--connection-limit',
                   help='concurrent flows this SE admits; -1 or 0: no '
                   'limit (docs/dataplane.md, connection_limit)')
    p.add_argument('--allowed-cidr', action='append', default=[],
                   help='allow only sources in this CIDR (repeatable; the '
                   'prefixes of the VIP\'s family apply); replaces the list')
    p.add_argument('--any-source', action='store_true',
                   help='with set: remove the allow list')
    p.set_defaults(func=cmd_listener)

    p = sub.add_parser('member', help='add, change or delete a member')
    p.add_argument('action', choices=['add', 'set', 'del'])
    p.add_argument('listener')
    p.add_argument('address')
    p.add_argument('--weight', help='0..65535 (0: no new flows)')
    p.add_argument('--backup', action='store_true')
    p.set_defaults(func=cmd_member)

    p = sub.add_parser('tunnel-source', help='outer source addresses')
    p.add_argument('action', choices=['set'])
    p.add_argument('--ipv4')
    p.add_argument('--ipv6')
    p.set_defaults(func=cmd_tunnel_source)

    p = sub.add_parser('apply', help='make the dataplane match a JSON '
                       'desired state (the format of "show --json")')
    p.add_argument('file')
    p.add_argument('--json', action='store_true')
    p.set_defaults(func=cmd_apply)

    for name, func in (('show', cmd_show), ('stats', cmd_stats)):
        p = sub.add_parser(name)
        p.add_argument('--json', action='store_true')
        p.set_defaults(func=func)

    p = sub.add_parser('lookup', help='which member a flow goes to, '
                       'answered by the loaded program (BPF_PROG_TEST_RUN)')
    p.add_argument('--listener', required=True)
    p.add_argument('--src', required=True, help='client IP:PORT')
    p.add_argument('--json', action='store_true')
    p.set_defaults(func=cmd_lookup)

    p = sub.add_parser('nexthop', help='re-resolve next hops')
    p.add_argument('action', choices=['refresh'])
    p.set_defaults(func=cmd_nexthop_refresh)

    p = sub.add_parser('decap', help='member-side decapsulation program')
    p.add_argument('action', choices=['attach', 'detach', 'show', 'stats'])
    p.add_argument('interface', nargs='?')
    p.add_argument('--address', action='append', default=[],
                   help='tunnel address to decapsulate for (repeatable)')
    p.add_argument('--source', action='append', default=[],
                   help='with attach: an SE tunnel source; only tunnel '
                   'packets from these are decapsulated (repeatable; '
                   'attach sets exactly the --address and --source '
                   'given: none, any source)')
    p.add_argument('--purge', action='store_true',
                   help='with detach: remove the pins too')
    p.add_argument('--reload', action='store_true')
    p.add_argument('--json', action='store_true')
    p.set_defaults(func=cmd_decap)
    return parser


def main(argv=None):
    """The dsrctl program (``argv`` None: sys.argv).  As a program it ends
    quietly on a closed pipe like a Unix tool (dsrctl stats | head); a
    caller that passes ``argv`` keeps its own SIGPIPE handling (a Python
    process that inherits SIG_DFL dies on a write to a dead child's pipe
    instead of getting BrokenPipeError)."""
    if argv is None:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        argv = sys.argv[1:]
    parser = build_parser(only=_command_of(argv))
    args = parser.parse_args(argv)
    _apply_config_defaults(args, parser)
    if args.command == 'decap':
        if args.action in ('attach', 'detach') and not args.interface:
            parser.error(f'decap {args.action} needs an interface')
        if args.action == 'attach' and not args.address:
            parser.error('decap attach needs at least one --address')
    if args.netns:
        try:
            setns(args.netns)
        except OSError as exc:
            parser.exit(2, f'dsrctl: error: cannot enter network namespace '
                           f'{args.netns!r}: {exc}\n')
    _import_dataplane()
    try:
        args.func(args)
    except (CommandError, model.InvalidConfig, dp_mod.DataplaneError,
            decap_mod.DecapError) as exc:
        parser.exit(2, f'dsrctl: error: {exc}\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
