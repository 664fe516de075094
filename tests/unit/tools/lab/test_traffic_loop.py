"""tools/lab/traffic_loop.py: its threads' lines reach the reader whole."""

import sys
import threading

from tools.lab import traffic_loop


class _Recorder:
    """A stdout that keeps each write apart: print() makes two of each
    line (text, then newline), which is what let another thread's line
    land in between."""

    def __init__(self):
        self.writes = []

    def write(self, text):
        self.writes.append(text)
        return len(text)

    def flush(self):
        pass


def test_each_line_is_one_write_even_from_several_threads(monkeypatch):
    out = _Recorder()
    monkeypatch.setattr(sys, 'stdout', out)
    threads = [threading.Thread(target=lambda n=n: [
        traffic_loop.say(f'MEMBER m{n}') for _ in range(20)])
        for n in range(4)]
    for t in threads:
        t.start()
    traffic_loop.say('STARTED')
    for t in threads:
        t.join()
    assert all(w.endswith('\n') and w.count('\n') == 1 for w in out.writes)
    lines = ''.join(out.writes).splitlines()
    assert lines.count('STARTED') == 1
    assert sorted(set(lines)) == ['MEMBER m0', 'MEMBER m1', 'MEMBER m2',
                                  'MEMBER m3', 'STARTED']
    assert len(lines) == 81
