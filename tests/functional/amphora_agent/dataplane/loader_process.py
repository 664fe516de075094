"""A long-lived process that (re)loads the SE program, as the agent will.

    loader_process.py --netns NS --pin-dir DIR --interface IF --state FILE

Enters the namespace, loads the program again (reusing the pinned maps),
swaps it in on the interface, applies the state, prints READY and waits to
be killed.
"""

import argparse
import json
import signal
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--netns', required=True)
    ap.add_argument('--pin-dir', required=True)
    ap.add_argument('--interface', required=True)
    ap.add_argument('--state', required=True)
    args = ap.parse_args()

    from pyroute2 import netns
    netns.setns(args.netns, flags=0)
    from amphora_agent.dataplane import dataplane
    from amphora_agent.dataplane import model

    with open(args.state) as f:
        desired = model.DesiredState.from_dict(json.load(f))
    dp = dataplane.Dataplane.open(args.pin_dir, reload=True)
    mode = dp.attach(args.interface, 'generic')
    changes = dp.apply(desired)
    print('READY', mode, json.dumps(changes), flush=True)
    signal.pause()


if __name__ == '__main__':
    sys.exit(main())
