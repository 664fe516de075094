#!/usr/bin/env python3
"""Run a HealthChecker (started in the namespace this process runs in) and
report on stdout, one line each, flushed:

    READY
    CHANGE <json {"key", "old", "new", "t", "reason"}>   t: time.monotonic()

    checker_process.py '<json config>'

config: {"source4": str|null, "source6": str|null, "targets": {key:
{"address", "port", "monitor": {MonitorSpec kwargs}|null,
"admin_state_up"}}}.  Runs until SIGTERM / SIGINT.
"""

import json
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.abspath(os.path.join(
    os.path.dirname(__file__), '..', '..', '..', '..')))

from amphora_agent.health import monitor as hm  # noqa: E402


def main():
    config = json.loads(sys.argv[1])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    out_lock = threading.Lock()
    checker = None

    def on_change(key, old, new):
        details = checker.details(key) if checker else None
        line = json.dumps({'key': key, 'old': old, 'new': new,
                           't': time.monotonic(),
                           'reason': (details or {}).get('last_reason')})
        with out_lock:
            print('CHANGE ' + line, flush=True)

    checker = hm.HealthChecker(on_change=on_change,
                               source4=config.get('source4'),
                               source6=config.get('source6'))
    targets = {}
    for key, t in config['targets'].items():
        monitor = t.get('monitor')
        targets[key] = hm.Target(
            address=t['address'], port=t.get('port'),
            monitor=None if monitor is None else hm.MonitorSpec(**monitor),
            admin_state_up=t.get('admin_state_up', True))
    checker.set_targets(targets)
    checker.start()
    with out_lock:
        print('READY', flush=True)
    stop.wait()
    checker.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
