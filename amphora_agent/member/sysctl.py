"""Reading and writing /proc/sys (of the caller's network namespace).

Keys are '/'-separated paths below /proc/sys, because interface names may
contain dots (eth0.100); :func:`display` gives the form sysctl(8) takes.
"""

import os

PROC_SYS = '/proc/sys'


def conf(family, ifname, name):
    """net/ipv4/conf/<ifname>/<name> (family 4 or 6)."""
    return f'net/ipv{family}/conf/{ifname}/{name}'


def display(key):
    """sysctl(8) accepts '/' paths; dotted only when that is unambiguous."""
    parts = key.split('/')
    return '.'.join(parts) if not any('.' in p for p in parts) else key


def command(values):
    """'sysctl -w k=v ...' fixing ``values`` ({key: value})."""
    return 'sysctl -w ' + ' '.join(f'{display(k)}={v}'
                                   for k, v in values.items())


class Sysctl:
    def __init__(self, root=PROC_SYS):
        self.root = root

    def _path(self, key):
        return os.path.join(self.root, key)

    def read(self, key):
        """The value as a string, None when the key does not exist."""
        try:
            with open(self._path(key)) as f:
                return f.read().strip()
        except FileNotFoundError:
            return None

    def write(self, key, value):
        with open(self._path(key), 'w') as f:
            f.write(f'{value}\n')

    def effective(self, family, ifname, name):
        """The value the kernel applies for arp_ignore, arp_announce and
        rp_filter: the larger of conf/all and conf/<ifname>."""
        values = [self.read(conf(family, n, name)) for n in ('all', ifname)]
        return max(int(v) for v in values if v is not None)
