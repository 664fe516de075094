"""dsr-l7: run the L7 engine by hand (and in the functional tests).

    python -m amphora_agent.l7.cli --config-file l7.conf apply doc.json
    python -m amphora_agent.l7.cli --config-file l7.conf stats
    python -m amphora_agent.l7.cli --config-file l7.conf stop
    python -m amphora_agent.l7.cli --config-file l7.conf serve doc.json \
        --stats-file stats.json

The options are the agent's [l7] group, [dataplane] decap_pin_dir and
Octavia's [certificates] / [service_auth] (the certificate manager's).
``apply`` is one-shot: the HAProxies it starts keep running after it
exits and the next run adopts them (pid files), as the agent does after a
restart.  Output is JSON; exit status 1 when a load balancer is ERROR, 2
when the document is refused.  ``serve`` applies a document and stays,
as the agent does, to run the UDP listeners' health checks (a member that
fails leaves the nftables map): it prints the apply result, then
``STATUS <json>`` whenever a member's status changes, keeps
``--stats-file`` current (engine.stats(), every 0.25 s) and on SIGTERM
stops checking (what it installed stays until ``stop``).

``batch FILE`` (``-``: standard input) runs apply / stats / stop commands,
one a line (``#`` comments and blank lines skipped), on one engine, as
``ip -batch`` and ``bpftool batch`` do: Octavia's templater is imported
once (about 6 CPU-seconds) instead of once a command, and the engine keeps
what it applied between commands, as the agent does.  Each command prints
one JSON line as it ends, ``{"command": LINE, "rc": N, "output": ...}``
(output: what the command alone would print; ``"error"`` instead when the
line is not a command or the command failed); a failing command does not
stop the batch; the exit status is the highest rc.
"""

import argparse
import json
import os
import shlex
import signal
import sys
import threading

from oslo_config import cfg

from amphora_agent.l7 import engine as engine_mod
from amphora_agent import opts
from dsr_wire.schema import Invalid


def build_engine(config_files, se_id):
    # The global configuration: Octavia's certificate managers read their
    # options ([certificates], [service_auth]) from it.
    conf = cfg.CONF
    opts.register_opts(conf)
    opts.register_l7_opts(conf)
    conf(args=[], default_config_files=config_files)
    return engine_mod.Engine.from_conf(conf.l7, conf.dataplane.decap_pin_dir,
                                       se_id, certs_on_use=True)


class _Refused(Exception):
    """A batch line that is not a command."""


class _Parser(argparse.ArgumentParser):
    # A batch line's mistake is that line's error, not the batch's exit.
    def error(self, message):
        raise _Refused(message)


def _add_commands(parser, batch):
    """The subcommands; a batch line takes apply, stats and stop only, and
    its mistakes (no --help there: it would print into the answers) are
    _Refused."""
    if batch:
        sub = parser.add_subparsers(dest='command', required=True,
                                    parser_class=_Parser)
        extra = {'add_help': False}
    else:
        sub = parser.add_subparsers(dest='command', required=True)
        extra = {}
    apply_p = sub.add_parser('apply', help='apply an L7 document (JSON)',
                             **extra)
    apply_p.add_argument('document')
    sub.add_parser('stats', help='per load balancer listener counters and '
                                 'member status', **extra)
    sub.add_parser('stop', help='stop every HAProxy and undo the host '
                                'changes', **extra)
    if batch:
        return
    serve_p = sub.add_parser('serve', help='apply an L7 document and run '
                                           'its health checks until SIGTERM')
    serve_p.add_argument('document')
    serve_p.add_argument('--stats-file',
                         help='keep engine statistics (JSON) here')
    batch_p = sub.add_parser('batch', help='apply / stats / stop commands '
                                           'from a file (- : stdin), one a '
                                           'line, on one engine')
    batch_p.add_argument('file')


def run_command(engine, args):
    """apply, stats or stop on ``engine``: (exit status, the JSON-able
    output or None).  stop's host clean-up lines go to stderr."""
    if args.command == 'apply':
        with open(args.document) as f:
            document = json.load(f)
        try:
            result = engine.apply(document)
        except Invalid as exc:
            return 2, {'refused': str(exc)}
        failed = any(r['status'] == 'ERROR' for r in result.values())
        return (1 if failed else 0), {
            'generation': engine.generation, 'ready': engine.ready,
            'tunnel_addresses': {str(k): str(v) for k, v in
                                 engine.host.tunnel_addresses.items()},
            'load_balancers': result}
    engine.adopt()
    if args.command == 'stats':
        return 0, engine.stats()
    for line in engine.stop():
        print(line, file=sys.stderr)
    return 0, None


def _parse(parser, text):
    """A batch line's arguments; _Refused when it is not a command."""
    try:
        words = shlex.split(text, comments=True)
    except ValueError as exc:   # an unbalanced quote
        raise _Refused(str(exc)) from None
    return parser.parse_args(words)


def batch(engine, lines, out=None):
    """Each line a command (see the module's doc); the highest rc."""
    out = out or sys.stdout
    parser = _Parser(prog='dsr-l7 batch', add_help=False)
    _add_commands(parser, batch=True)
    worst = 0
    for line in lines:
        text = line.strip()
        if not text or text.startswith('#'):
            continue
        answer = {'command': text}
        try:
            rc, answer['output'] = run_command(engine,
                                               _parse(parser, text))
        except _Refused as exc:
            rc, answer['error'] = 2, (
                f'{exc}; commands: apply DOCUMENT, stats, stop')
        except Exception as exc:  # noqa: BLE001 -- this command's failure
            rc, answer['error'] = 1, f'{type(exc).__name__}: {exc}'
        answer['rc'] = rc
        worst = max(worst, rc)
        print(json.dumps(answer, sort_keys=True), file=out, flush=True)
    return worst


def main(argv=None):
    parser = argparse.ArgumentParser(prog='dsr-l7', description=__doc__,
                                     formatter_class=argparse.
                                     RawDescriptionHelpFormatter)
    parser.add_argument('--config-file', action='append', default=[],
                        help='oslo.config file with [l7] (repeatable)')
    parser.add_argument('--se-id', default='l7se',
                        help='this L7 SE\'s id (HAProxy peer name)')
    _add_commands(parser, batch=False)
    args = parser.parse_args(argv)
    engine = build_engine(args.config_file, args.se_id)
    if args.command == 'batch':
        if args.file == '-':
            return batch(engine, sys.stdin)
        with open(args.file) as f:
            return batch(engine, f)
    if args.command == 'serve':
        args.command = 'apply'
        rc, output = run_command(engine, args)
        print(json.dumps(output, sort_keys=True), flush=True)
        if rc == 0:
            serve(engine, args.stats_file)
        return rc
    rc, output = run_command(engine, args)
    if output is not None:
        print(json.dumps(output, sort_keys=True), flush=True)
    return rc


def member_statuses(stats):
    return {member_id: member['operating_status']
            for lb in stats.values() for pool in lb.get('pools', {}).values()
            for member_id, member in pool['members'].items()}


def serve(engine, stats_file, interval=0.25):
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    printed = None
    while not stop.is_set():
        stats = engine.stats()
        # The file first: whoever reads it after a STATUS line sees at
        # least that status.
        if stats_file:
            tmp = stats_file + '.tmp'
            with open(tmp, 'w') as f:
                json.dump(stats, f, sort_keys=True)
            os.replace(tmp, stats_file)
        statuses = member_statuses(stats)
        if statuses != printed:
            print('STATUS ' + json.dumps(statuses, sort_keys=True),
                  flush=True)
            printed = statuses
        stop.wait(interval)
    engine.udp.stop(remove=False)


if __name__ == '__main__':
    sys.exit(main())
