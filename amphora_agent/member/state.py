"""The record of what setup changed, so teardown undoes exactly that.

Only changes setup made are recorded: an address, link or sysctl value that
was already there stays when teardown runs.  The first recorded old value
of a sysctl is kept across repeated setups.  Written atomically.
"""

import json
import os

DEFAULT_PATH = '/var/lib/octavia-dsr/member-state.json'
VERSION = 1


class Journal:
    def __init__(self, path, data=None):
        self.path = path
        self.data = data or {}
        self.data.setdefault('version', VERSION)
        for name in ('sysctls', 'files'):
            self.data.setdefault(name, {})
        for name in ('addresses', 'links', 'neigh_proxies'):
            self.data.setdefault(name, [])
        self.data.setdefault('decap', None)
        self.data.setdefault('spec', None)

    @classmethod
    def load(cls, path):
        try:
            with open(path) as f:
                return cls(path, json.load(f))
        except FileNotFoundError:
            return cls(path)

    @property
    def exists(self):
        return os.path.exists(self.path)

    def save(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)),
                    exist_ok=True)
        tmp = f'{self.path}.{os.getpid()}.tmp'
        with open(tmp, 'w') as f:
            json.dump(self.data, f, indent=2, sort_keys=True)
            f.write('\n')
        os.replace(tmp, self.path)

    def remove(self):
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    # -- records -----------------------------------------------------------

    def sysctl_changed(self, key, old, new):
        entry = self.data['sysctls'].setdefault(key, {'old': old})
        entry['new'] = str(new)

    def add(self, kind, record):
        if record not in self.data[kind]:
            self.data[kind].append(record)

    def discard(self, kind, record):
        if record in self.data[kind]:
            self.data[kind].remove(record)

    def records(self, kind):
        return list(self.data[kind])
