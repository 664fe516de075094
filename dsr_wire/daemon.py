"""How dsr-agent and dsr-controller run as services: cotyledon, the
service framework of Octavia's own octavia-worker (a master process that
supervises one worker process), with oslo.config's "mutate" reload.

    daemon.register_opts(conf)        # before parsing: [DEFAULT]
                                      # graceful_shutdown_timeout, log_options
    daemon.serve(conf, 'dsr-agent', make)     # never returns

``make(conf)`` runs in the worker process and returns the daemon object:
``start()``, ``stop()`` and ``reload()``.

The process contract the units (etc/systemd/), the labs and the tests rely
on -- the same for both daemons:

* the worker prints ``READY`` once ``start()`` returned;
* SIGTERM to the master: the master asks the worker to stop, ``stop()``
  runs (bounded by graceful_shutdown_timeout), both exit 0;
* SIGHUP to the master: every config file is re-read
  (``ConfigOpts.mutate_config_files``: options declared mutable take their
  new value, others keep theirs with a warning), then ``reload()`` applies
  them (docs/operations.md lists what is reloadable);
* SIGINT: immediate exit of both, nothing stopped gracefully;
* a worker that fails before READY ends the daemon with its exit status
  (a configuration error must reach systemd, not loop); one that dies
  later is started again by the master;
* the master dying (kill -9, a crash) makes the worker exit at once,
  nothing stopped: the daemon dies as a single process would (the agent
  leaves routes and dataplane as they are; the controller's unacknowledged
  changes go back to the queue).  cotyledon's own reaction, a graceful
  stop, would turn a crash into a clean stop.
"""

import multiprocessing
import os
import select
import sys
import threading

import cotyledon
from cotyledon import oslo_config_glue
from oslo_log import log as logging

LOG = logging.getLogger(__name__)


def register_opts(conf):
    oslo_config_glue.register_opts(conf)


class _Worker(cotyledon.Service):
    """The worker process: builds the daemon object and drives it."""

    def __init__(self, worker_id, conf, make, lifeline, ever_ready):
        super().__init__(worker_id)
        self._conf = conf
        self._make = make
        self._ever_ready = ever_ready
        # Only the master keeps the write end: EOF on the read end means
        # the master is gone.
        self._lifeline = lifeline[0]
        os.close(lifeline[1])
        self._daemon = None
        self._started = threading.Event()
        threading.Thread(target=self._watch_master, name='lifeline',
                         daemon=True).start()

    def _watch_master(self):
        select.select([self._lifeline], [], [])
        self._orphaned()

    def _orphaned(self):
        LOG.warning('%s: the master process is gone: exiting at once, '
                    'nothing stopped', self.name)
        os._exit(1)

    def run(self):
        try:
            self._daemon = self._make(self._conf)
            self._daemon.start()
        except Exception as exc:
            self._started.set()
            LOG.exception('%s cannot start', self.name)
            print(f'{self.name}: {exc}', file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        self._started.set()
        self._ever_ready.set()
        LOG.info('%s running', self.name)
        print('READY', flush=True)

    def terminate(self):
        # cotyledon also answers the master's death with this SIGTERM:
        # never a graceful stop then.
        if select.select([self._lifeline], [], [], 0)[0]:
            self._orphaned()
        # A stop that arrives while start() runs waits for it, so stop()
        # always sees a whole daemon.
        self._started.wait()
        if self._daemon is not None:
            self._daemon.stop()

    def reload(self):
        LOG.info('SIGHUP: re-reading the configuration files')
        self._conf.mutate_config_files()
        if self._conf.log_options:
            # What the worker runs with now (at DEBUG, secrets masked).
            self._conf.log_opt_values(LOG, logging.DEBUG)
        self._started.wait()
        if self._daemon is not None:
            self._daemon.reload()


def _manager():
    try:
        # Fork explicitly: the worker inherits the parsed configuration
        # (Python 3.14 defaults to forkserver, which would pickle it).
        return cotyledon.ServiceManager(
            mp_context=multiprocessing.get_context('fork'))
    except TypeError:   # cotyledon < 2.1 always forks
        return cotyledon.ServiceManager()


def serve(conf, name, make):
    """Run ``make``'s daemon in a cotyledon worker until stopped; exits
    the process (status 0 after a stop, the worker's status when it
    failed before READY)."""
    manager = _manager()
    oslo_config_glue.setup(manager, conf, reload_method='mutate')
    context = getattr(manager, 'mp_context', None) or multiprocessing
    ever_ready = context.Event()
    lifeline = os.pipe()

    def dead_worker(service_id, worker_id, exit_code):
        if not ever_ready.is_set():
            LOG.error('%s failed to start (worker exit status %s); '
                      'stopping', name, exit_code)
            os._exit(exit_code if exit_code and exit_code > 0 else 1)
    manager.register_hooks(on_dead_worker=dead_worker)
    worker = type(_Worker.__name__, (_Worker,), {'name': name})
    manager.add(worker, workers=1,
                args=(conf, make, lifeline, ever_ready))
    manager.run()
