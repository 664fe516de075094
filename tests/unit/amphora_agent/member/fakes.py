"""A fake pyroute2 IPRoute: the boundary of the host changes.

Requests are recorded twice: as the keywords dsr-member passed, and as the
netlink attributes pyroute2's own request processor makes of them (what
the kernel would receive).  Links and addresses it is asked to add show up
in later dumps, so idempotency can be tested.
"""

import ipaddress
import os

from pyroute2.iproute.linux import get_arguments_processor


def netlink_attrs(command, kwargs):
    """pyroute2's translation of link() keywords into ifinfmsg fields."""
    return dict(get_arguments_processor('link', command, dict(kwargs)))


class FakeIPRoute:
    def __init__(self, links=None, addresses=(), default4=None,
                 default6=None, proc_sys=None):
        self.calls = []
        self.proc_sys = proc_sys   # a new link gets conf/<dev>/ there
        self.links = {}
        for name, mtu in (links or {'lo': 65536, 'eth0': 1500}).items():
            self._new_link(name, '', {}, mtu=mtu, up=True)
        self.addrs = []
        for ifname, address, prefixlen in addresses:
            self._new_addr(ifname, address, prefixlen, 0)
        self.defaults = {4: default4, 6: default6}   # (ifname, gateway)
        self.proxies = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def _new_link(self, name, kind, data, mtu=1480, up=False):
        index = len(self.links) + 1
        self.links[name] = {'index': index, 'IFLA_IFNAME': name,
                            'flags': 1 if up else 0, 'IFLA_MTU': mtu,
                            'IFLA_ADDRESS': f'02:00:00:00:00:{index:02x}',
                            'IFLA_STATS64': {'rx_packets': 0}}
        if kind:
            self.links[name]['IFLA_LINKINFO'] = {
                'IFLA_INFO_KIND': kind,
                'IFLA_INFO_DATA': {'attrs': list(data.items())}}

    def _new_addr(self, ifname, address, prefixlen, flags):
        self.addrs.append({'index': self.links[ifname]['index'],
                           'IFA_ADDRESS': str(address),
                           'prefixlen': prefixlen, 'flags': flags,
                           'family': 2 if ':' not in str(address) else 10})

    def _by_index(self, index):
        return next(v for v in self.links.values() if v['index'] == index)

    # -- the IPRoute API dsr-member uses ------------------------------------

    def link_lookup(self, ifname):
        return [self.links[ifname]['index']] if ifname in self.links else []

    def get_links(self, *indexes, ifname=None):
        if ifname is not None:
            return [self.links[ifname]] if ifname in self.links else []
        if indexes:
            return [self._by_index(i) for i in indexes]
        return list(self.links.values())

    def get_addr(self, index=None):
        return [a for a in self.addrs if index is None or a['index'] == index]

    def get_default_routes(self, family):
        found = self.defaults[4 if family == 2 else 6]
        if not found:
            return ()
        ifname, gateway = found
        return ({'RTA_OIF': self.links[ifname]['index'],
                 'RTA_GATEWAY': gateway, 'RTA_METRICS': None},)

    def link(self, command, **kwargs):
        self.calls.append(('link', command, kwargs))
        if command == 'add':
            info = netlink_attrs('add', kwargs)['IFLA_LINKINFO']['attrs']
            data = dict(dict(info)['IFLA_INFO_DATA']['attrs'])
            self._new_link(kwargs['ifname'], kwargs['kind'], data)
            if self.proc_sys:
                _copy_default(self.proc_sys, kwargs['ifname'])
        elif command == 'set':
            link = self._by_index(kwargs['index'])
            link['flags'] = 1 if kwargs.get('state') == 'up' else 0
        elif command == 'del':
            link = self._by_index(kwargs['index'])
            del self.links[link['IFLA_IFNAME']]
        return []

    def addr(self, command, index, address, prefixlen, **kwargs):
        self.calls.append(('addr', command, dict(
            index=index, address=address, prefixlen=prefixlen, **kwargs)))
        if command == 'add':
            self._new_addr(self._by_index(index)['IFLA_IFNAME'], address,
                           prefixlen, kwargs.get('flags', 0))
        elif command == 'del':
            self.addrs = [a for a in self.addrs
                          if not (a['index'] == index
                                  and a['IFA_ADDRESS'] == address)]
        return []

    def neigh(self, command, **kwargs):
        self.calls.append(('neigh', command, kwargs))
        if command == 'dump':
            return [{'NDA_DST': a, 'ifindex': i} for a, i in self.proxies]
        entry = (kwargs['dst'], kwargs['ifindex'])
        if command == 'add':
            self.proxies.append(entry)
        elif command == 'del':
            self.proxies.remove(entry)
        return []

    def changes(self):
        """The calls that change something (no dumps)."""
        return [c for c in self.calls if c[1] != 'dump']


def fake_proc_sys(root, interfaces, values=None):
    """A /proc/sys tree with the conf keys setup reads, all 0."""
    names = ('arp_ignore', 'arp_announce', 'rp_filter')
    for ifname in ('all', 'default') + tuple(interfaces):
        for name in names:
            _write(root, f'net/ipv4/conf/{ifname}/{name}', 0)
        _write(root, f'net/ipv6/conf/{ifname}/disable_ipv6', 0)
    for key, value in (values or {}).items():
        _write(root, key, value)


def _copy_default(root, ifname):
    base = os.path.join(root, 'net/ipv4/conf/default')
    for name in os.listdir(base):
        with open(os.path.join(base, name)) as f:
            _write(root, f'net/ipv4/conf/{ifname}/{name}', f.read().strip())


def _write(root, key, value):
    path = os.path.join(root, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(f'{value}\n')


def ip(text):
    return ipaddress.ip_address(text)
