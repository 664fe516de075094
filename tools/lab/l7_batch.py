"""An L7 SE's engine for a lab: one ``dsr-l7 batch -`` per L7 SE, in its
namespace, that imports Octavia's templater once (about 6 CPU-seconds a
``dsr-l7`` run otherwise) and keeps what it applied between commands, as
the L7 agent does.

    engine = L7Batch(ns, config_file, se_id, log_path)
    answer = engine.call('apply', doc_path)   # {'rc', 'output' | 'error'}
    engine.close()          # stdin closed: the batch ends

    engines = Engines(topo, config_file_of, log_dir)  # one per L7 SE
    engines.call('m1', 'stats')
    engines.once('m2', 'apply', doc_path)   # a one-shot dsr-l7
    engines.stop(['m1', 'm2'])          # stop on each, then the batches end

Its stderr (stop's clean-up lines, warnings) goes to ``log_path``.
"""

import json
import os
import queue
import shlex
import subprocess
import sys
import threading

from tools.lab import netns


def dsr_l7(config_file, se_id, *words):
    """dsr-l7's command line (``python -m amphora_agent.l7.cli``)."""
    return [sys.executable, '-m', 'amphora_agent.l7.cli', '--config-file',
            config_file, '--se-id', se_id, *words]


class L7Batch:
    """One ``dsr-l7 batch -`` in netns ``ns``; answers are read by a
    thread, so a call can wait with a deadline."""

    def __init__(self, ns, config_file, se_id, log_path):
        self.log_path = log_path
        with open(log_path, 'ab') as log:
            self.proc = subprocess.Popen(
                netns.ns_cmd(ns, dsr_l7(config_file, se_id, 'batch', '-')),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                text=True, bufsize=1, start_new_session=True)
        self._answers = queue.Queue()
        threading.Thread(target=self._read, daemon=True,
                         name=f'l7-batch-{self.proc.pid}').start()

    def _read(self):
        for line in self.proc.stdout:
            self._answers.put(line)
        self._answers.put(None)

    def _log_tail(self):
        try:
            with open(self.log_path) as f:
                return f.read()[-4000:]
        except OSError:
            return ''

    def call(self, *words, timeout=180):
        """One command's answer: {'command', 'rc', 'output' or 'error'}.
        RuntimeError when the batch is gone; TimeoutError (the batch
        killed) when no answer comes within ``timeout``."""
        try:
            self.proc.stdin.write(shlex.join(str(w) for w in words) + '\n')
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass            # told below, with the exit status
        try:
            line = self._answers.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise TimeoutError(f'dsr-l7 batch: no answer to {words} in '
                               f'{timeout} s') from None
        if line is None:
            self._answers.put(None)     # every later call sees it too
            try:
                rc = self.proc.wait(30)
            except subprocess.TimeoutExpired:   # closed its stdout only
                self.kill()
                rc = self.proc.returncode
            raise RuntimeError(f'dsr-l7 batch exited ({rc}) before '
                               f'answering {words}: {self._log_tail()}')
        return json.loads(line)

    def close(self, timeout=30):
        """End the batch (EOF on its stdin); killed after ``timeout``."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self):
        netns.kill_proc(self.proc)


class Engines:
    """The L7 SEs' engines of a lab: an L7Batch per L7 SE, started on its
    first command.  ``config_file(name)``: that SE's dsr-l7 configuration;
    logs go to ``log_dir``."""

    def __init__(self, topo, config_file, log_dir):
        self.topo, self.config_file, self.log_dir = topo, config_file, log_dir
        self.batches = {}

    def call(self, name, *words):
        batch = self.batches.get(name)
        if batch is None:
            batch = self.batches[name] = L7Batch(
                self.topo.ns(name), self.config_file(name), name,
                os.path.join(self.log_dir, f'{name}-dsr-l7.log'))
        return batch.call(*words)

    def once(self, name, *words, timeout=180):
        """A one-shot dsr-l7 on ``name`` (a new engine, as after an L7
        agent's restart); the CompletedProcess."""
        return self.topo.run(name, dsr_l7(self.config_file(name), name,
                                          *words),
                             check=False, timeout=timeout)

    def stop(self, names):
        """``stop`` on each of ``names`` (HAProxies, VIPs, decap), then
        every batch ends.  A batch that is gone or stuck is replaced by a
        dsr-l7 stop of its own: a teardown leaves nothing behind."""
        for name in names:
            try:
                self.call(name, 'stop')
            except Exception as exc:  # noqa: BLE001 -- teardown goes on
                print(f'dsr-l7 stop on {name}: {exc}', file=sys.stderr)
                done = self.once(name, 'stop', timeout=120)
                print(f'dsr-l7 stop on {name}, on its own: rc '
                      f'{done.returncode} {done.stderr[-2000:]}',
                      file=sys.stderr)
        for batch in self.batches.values():
            batch.close()
        self.batches.clear()
