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
"""

import argparse
import json
import os
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
                                       se_id)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='dsr-l7', description=__doc__,
                                     formatter_class=argparse.
                                     RawDescriptionHelpFormatter)
    parser.add_argument('--config-file', action='append', default=[],
                        help='oslo.config file with [l7] (repeatable)')
    parser.add_argument('--se-id', default='l7se',
                        help='this L7 SE\'s id (HAProxy peer name)')
    sub = parser.add_subparsers(dest='command', required=True)
    apply_p = sub.add_parser('apply', help='apply an L7 document (JSON)')
    apply_p.add_argument('document')
    sub.add_parser('stats', help='per load balancer listener counters and '
                                 'member status')
    sub.add_parser('stop', help='stop every HAProxy and undo the host '
                                'changes')
    serve_p = sub.add_parser('serve', help='apply an L7 document and run '
                                           'its health checks until SIGTERM')
    serve_p.add_argument('document')
    serve_p.add_argument('--stats-file',
                         help='keep engine statistics (JSON) here')
    args = parser.parse_args(argv)
    engine = build_engine(args.config_file, args.se_id)
    if args.command in ('apply', 'serve'):
        with open(args.document) as f:
            document = json.load(f)
        try:
            result = engine.apply(document)
        except Invalid as exc:
            print(json.dumps({'refused': str(exc)}))
            return 2
        print(json.dumps({'generation': engine.generation,
                          'ready': engine.ready,
                          'tunnel_addresses': {
                              str(k): str(v) for k, v in
                              engine.host.tunnel_addresses.items()},
                          'load_balancers': result}, sort_keys=True),
              flush=True)
        failed = any(r['status'] == 'ERROR' for r in result.values())
        if args.command == 'serve' and not failed:
            serve(engine, args.stats_file)
        return 1 if failed else 0
    engine.adopt()
    if args.command == 'stats':
        print(json.dumps(engine.stats(), sort_keys=True))
        return 0
    for line in engine.stop():
        print(line, file=sys.stderr)
    return 0


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
