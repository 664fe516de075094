"""dsr-member: prepare (setup/teardown), diagnose (check) and describe
(cloud-init, windows) a tier-1 DSR member.  See docs/members.md."""

import argparse
import ipaddress
import os
import shutil
import signal
import sys

from amphora_agent import locks
from amphora_agent.member import check as check_mod
from amphora_agent.member import ebpf
from amphora_agent.member import handoff
from amphora_agent.member import host
from amphora_agent.member import render
from amphora_agent.member import spec as spec_mod
from amphora_agent.member import state
from amphora_agent.member import sysctl as sysctl_mod
from amphora_agent.member import windows


class CommandError(Exception):
    pass


def _ipr():
    from pyroute2 import IPRoute
    return IPRoute()


def _spec(args, recorded=None):
    """A MemberSpec from the options, completed by the recorded setup."""
    recorded = recorded or {}
    try:
        return spec_mod.MemberSpec(
            vips=args.vip or recorded.get('vips') or [],
            encaps=tuple(getattr(args, 'encap', None)
                         or recorded.get('encaps') or ()),
            interface=getattr(args, 'interface', None)
            or recorded.get('interface'),
            addresses=getattr(args, 'address', None)
            or recorded.get('addresses') or [],
            ports=getattr(args, 'port', None) or recorded.get('ports') or [],
            client_mtu=getattr(args, 'client_mtu', None)
            or recorded.get('client_mtu') or spec_mod.DEFAULT_CLIENT_MTU,
            sources=getattr(args, 'se_source', None)
            or recorded.get('sources') or [])
    except (spec_mod.SpecError, ValueError) as exc:
        raise CommandError(str(exc))


def _command_path():
    """How the boot unit runs dsr-member."""
    found = shutil.which('dsr-member')
    return found or '/usr/local/bin/dsr-member'


def _setups_locked(state_file):
    """The lock of the folder of setups: one setup or teardown at a time
    reads and writes their journals (handoff) and the host."""
    return locks.held('member-setups',
                      os.path.dirname(os.path.abspath(state_file)))


def _hand_over(journal, keep=None):
    lines, heirs = handoff.hand_over(journal, handoff.siblings(journal),
                                     keep)
    for heir in heirs:
        heir.save()
    return lines


def cmd_setup(args):
    with _setups_locked(args.state_file):
        _setup(args)


def _setup(args):
    spec = _spec(args)
    journal = state.Journal.load(args.state_file)
    # Which host it is about: siblings of another namespace are not.
    journal.data['netns'] = handoff.netns_id()
    sysctl = sysctl_mod.Sysctl()
    lines = []
    try:
        with _ipr() as ipr:
            if journal.exists:
                # Run again: what it no longer gives and another setup
                # relies on goes to that setup, not away.
                host.resolve(spec, ipr)
                recorded = journal.data.get('spec') or {}
                lines += _hand_over(journal, handoff.relied_on(dict(
                    spec.to_dict(),
                    decap=recorded.get('decap', args.decap))))
            mode, done = host.setup(spec, args.decap, ipr, sysctl, journal,
                                    pin_dir=args.decap_pin_dir)
            lines += done
        if args.persist:
            argv = render.setup_argv(
                spec, mode, command=args.command or _command_path(),
                state_file=args.state_file,
                pin_dir=(args.decap_pin_dir
                         if args.decap_pin_dir != ebpf.DEFAULT_PIN_DIR
                         else None))
            lines += render.write(args.root,
                                  render.persist_files(spec, mode, argv),
                                  journal)
    finally:
        # Even a failed setup records what it changed, for teardown.
        journal.save()
    for line in lines:
        print(line)
    changed = sum(1 for line in lines if line[:1] in '+-')
    print(f'setup done: {changed} change(s), state in {args.state_file}')


def cmd_teardown(args):
    with _setups_locked(args.state_file):
        return _teardown(args)


def _teardown(args):
    journal = state.Journal.load(args.state_file)
    if not journal.exists:
        print(f'nothing to undo: no state file {args.state_file}')
        return 0
    # What other setups in the folder rely on is theirs to undo; saved at
    # once, so that a teardown failing further on never leaves a record in
    # two journals.
    lines = _hand_over(journal)
    journal.save()
    with _ipr() as ipr:
        lines += host.teardown(ipr, sysctl_mod.Sysctl(), journal)
    lines += render.remove(journal)
    journal.remove()
    for line in lines:
        print(line)
    undone = sum(1 for line in lines if line[:1] in '+-')
    print(f'teardown done: {undone} change(s) undone')
    return 0


def cmd_check(args):
    journal = state.Journal.load(args.state_file)
    recorded = journal.data.get('spec') or {}
    spec = _spec(args, recorded)
    pin_dir = args.decap_pin_dir or recorded.get('pin_dir') \
        or ebpf.DEFAULT_PIN_DIR
    mode = recorded.get('decap')
    # The fix for a missing decap path: this member's own setup command.
    argv = render.setup_argv(
        spec, mode or 'auto',
        state_file=(args.state_file
                    if args.state_file != state.DEFAULT_PATH else None),
        pin_dir=pin_dir if pin_dir != ebpf.DEFAULT_PIN_DIR else None)
    with _ipr() as ipr:
        try:
            problems = check_mod.run(spec, ipr, sysctl_mod.Sysctl(), pin_dir,
                                     argv, mode)
        except host.SetupError as exc:
            raise CommandError(str(exc))
        for problem in problems:
            print(problem)
        stopped = False
        if args.through:
            tcp = [p for p in spec.ports if p.protocol == 'tcp']
            if not tcp:
                raise CommandError('--through needs a TCP --port')
            mode = check_mod.detect_mode(spec, ipr) or mode
            counter = check_mod.decap_counter(spec, ipr, mode, pin_dir)
            from amphora_agent.member import probe
            for vip in spec.vips:
                result = probe.run(ipr, spec, args.through, vip,
                                   tcp[0].number, counter,
                                   count=args.probes)
                for line in result.lines:
                    print(line)
                stopped = stopped or result.stopped is not None
    if not problems and not stopped:
        print('no problems found')
    return 1 if problems or stopped else 0


def cmd_cloud_init(args):
    spec = _spec(args)
    argv = render.setup_argv(spec, args.decap)
    sys.stdout.write(render.cloud_init(spec, args.decap, argv))
    return 0


def cmd_windows(args):
    spec = _spec(args)
    sys.stdout.write(windows.script(spec, uplink=args.interface_alias,
                                    loopback=args.loopback_name))
    return 0


def _address(text):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not an IP address')


def _member_options(p, vip_required=True, decap_default='auto'):
    p.add_argument('--vip', action='append', required=vip_required,
                   help='a VIP this member serves (repeatable; IPv4 or '
                   'IPv6)')
    p.add_argument('--encap', action='append', choices=spec_mod.ENCAPS,
                   help='encapsulation the SEs use towards this member '
                   '(repeatable; default ipip)')
    p.add_argument('--decap', choices=spec_mod.DECAP_MODES,
                   default=decap_default,
                   help='kernel tunnel devices, the eBPF tc program, or '
                   'auto: the kernel\'s when its tunnel drivers exist')
    p.add_argument('--interface',
                   help='where the SEs\' packets arrive (default: the '
                   'interface of the default route)')
    p.add_argument('--address', action='append',
                   help='member address the SEs tunnel to, one per family '
                   '(default: the interface\'s first global addresses)')
    p.add_argument('--port', action='append',
                   help='service port: PORT or PORT/udp (repeatable)')
    p.add_argument('--se-source', action='append', metavar='ADDRESS',
                   help='an SE tunnel source ([agent] tunnel_source4/6 of '
                   'each SE; repeatable): only tunnel packets from these '
                   'are decapsulated, the rest dropped (eBPF decap; '
                   'default: from any source)')


def _state_option(p):
    p.add_argument('--state-file', default=state.DEFAULT_PATH,
                   help='record of what setup changed '
                   f'(default {state.DEFAULT_PATH})')


def build_parser():
    parser = argparse.ArgumentParser(
        prog='dsr-member',
        description='Prepare and check a tier-1 octavia-dsr member.')
    parser.add_argument('--netns', help='network namespace to enter first')
    sub = parser.add_subparsers(dest='command_name', required=True)

    p = sub.add_parser('setup', help='prepare this host (idempotent)')
    _member_options(p)
    _state_option(p)
    p.add_argument('--client-mtu', type=int,
                   default=spec_mod.DEFAULT_CLIENT_MTU,
                   help='largest client packet to fit the tunnel (MTU '
                   'advice)')
    p.add_argument('--decap-pin-dir', default=ebpf.DEFAULT_PIN_DIR,
                   help='bpffs directory of the eBPF decap program')
    p.add_argument('--persist', action='store_true',
                   help='also write sysctl.d, systemd-networkd and a '
                   'systemd unit so the preparation survives a reboot')
    p.add_argument('--root', default='/',
                   help='with --persist: where etc/ is (default /)')
    p.add_argument('--command', help='with --persist: the dsr-member '
                   'command the boot unit runs')
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser('teardown', help='undo exactly what setup did')
    _state_option(p)
    p.set_defaults(func=cmd_teardown)

    p = sub.add_parser('check', help='diagnose; one line per problem with '
                       'its fix (exit 1 when any)')
    _member_options(p, vip_required=False, decap_default=None)
    _state_option(p)
    p.add_argument('--client-mtu', type=int)
    p.add_argument('--decap-pin-dir')
    p.add_argument('--through', type=_address, metavar='SE_ADDRESS',
                   help='also send TCP SYNs to the VIP through the SE and '
                   'report where they stopped')
    p.add_argument('--probes', type=int, default=16,
                   help='flows the probe sends per VIP')
    p.set_defaults(func=cmd_check)

    p = sub.add_parser('cloud-init', help='print #cloud-config user-data '
                       'preparing the member at first boot')
    _member_options(p)
    p.set_defaults(func=cmd_cloud_init)

    p = sub.add_parser('windows', help='print the PowerShell script for a '
                       'Windows server')
    p.add_argument('--vip', action='append', required=True)
    p.add_argument('--port', action='append',
                   help='service port for the firewall rule: PORT or '
                   'PORT/udp (repeatable; default: every port of the VIPs)')
    p.add_argument('--interface-alias', default='Ethernet',
                   help='the uplink\'s InterfaceAlias (default Ethernet)')
    p.add_argument('--loopback-name', default='dsr-loopback',
                   help='name for the loopback adapter')
    p.set_defaults(func=cmd_windows)
    return parser


def main(argv=None):
    """The dsr-member program (``argv`` None: sys.argv).  As a program it
    ends quietly on a closed pipe; a caller that passes ``argv`` keeps its
    own SIGPIPE handling (see dsrctl.main)."""
    if argv is None:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.netns:
        from pyroute2 import netns
        try:
            # flags=0: pyroute2 would otherwise create a missing namespace.
            netns.setns(args.netns, flags=0)
        except OSError as exc:
            parser.exit(2, f'dsr-member: error: cannot enter network '
                           f'namespace {args.netns!r}: {exc}\n')
    try:
        return args.func(args) or 0
    except (CommandError, host.SetupError, spec_mod.SpecError,
            RuntimeError, OSError) as exc:
        parser.exit(2, f'dsr-member: error: {exc}\n')


if __name__ == '__main__':
    sys.exit(main())
