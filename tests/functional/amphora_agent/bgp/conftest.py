"""A BGP lab: SEs running the real BgpSpeaker (ExaBGP) against a real BIRD 2
router with ECMP into the router's kernel.

    def test_x(bgp_lab):
        lab = bgp_lab(n_se=3)                # topology + BIRD + speakers
        lab.start_speakers()                 # ExaBGP in every SE netns
        lab.speakers['se1'].announce(VIP4)
        lab.wait_route(VIP4, ['se1'])        # router kernel via se1

ASNs: router 65000, every SE 65001 (eBGP).  Each SE's speaker keeps its
state under a per-run directory that teardown removes; teardown also stops
every ExaBGP (by PID) and BIRD, whatever the test did, and then kills by PID
any process still mentioning the run directory.
"""

import os
import shutil
import tempfile

import pytest

from amphora_agent.bgp.exabgp_config import Peer
from amphora_agent.bgp.exabgp_config import SpeakerConfig
from amphora_agent.bgp import speaker as speaker_mod
from amphora_agent import processes
from tools.lab import bird as bird_mod

ROUTER_ASN = 65000
SE_ASN = 65001


class BgpLab:
    def __init__(self, topo, password=None, bfd=False, hold_time=9):
        self.topo = topo
        self.password = password
        self.hold_time = hold_time
        self.root = tempfile.mkdtemp(prefix=f'bgp-{topo.prefix}')
        self.bird = bird_mod.BirdRouter(topo, local_asn=ROUTER_ASN, bfd=bfd)
        self.bird.add_ses(topo.ses, SE_ASN, password=password)
        self.speakers = {}
        self.responders = []

    # -- speakers ------------------------------------------------------

    def state_dir(self, se):
        return os.path.join(self.root, se, 'bgp')

    def config(self, se, password='default', peer_asn=ROUTER_ASN):
        h = self.topo.host(se)
        pw = self.password if password == 'default' else password
        return SpeakerConfig(
            local_asn=SE_ASN, router_id=h.ipv4,
            peers=[Peer(h.gw4, peer_asn, password=pw,
                        hold_time=self.hold_time),
                   Peer(h.gw6, peer_asn, password=pw,
                        hold_time=self.hold_time)],
            nexthop4=h.ipv4, nexthop6=h.ipv6)

    def speaker(self, se, config=None, **kw):
        """A new BgpSpeaker object for ``se`` (same state dir each time, as
        a restarted agent would create); becomes lab.speakers[se]."""
        s = speaker_mod.BgpSpeaker(config or self.config(se),
                                   self.state_dir(se),
                                   netns=self.topo.ns(se), **kw)
        self.speakers[se] = s
        return s

    def start_speakers(self, ses=None, wait=True):
        ses = ses or [h.name for h in self.topo.ses]
        for se in ses:
            assert self.speaker(se).start() == 'started'
        if wait:
            self.bird.wait_established(
                [f'{se}_v{f}' for se in ses for f in (4, 6)])

    def nexthops(self, ses, family):
        return [self.topo.host(se).addr(family) for se in ses]

    def wait_route(self, prefix, ses, timeout=10.0, ip=None):
        """Wait until the router kernel routes ``prefix`` via exactly the
        SEs ``ses``; returns the seconds it took."""
        fam = 6 if ':' in prefix else 4
        return bird_mod.wait_route(self.bird, prefix,
                                   self.nexthops(ses, fam), timeout=timeout,
                                   ip=ip)

    def bfd_responder(self, se):
        r = bird_mod.BfdResponder(self.topo, se)
        self.responders.append(r)
        return r.start()

    # -- teardown ------------------------------------------------------

    def our_pids(self):
        pids = []
        for d in os.listdir('/proc'):
            if d.isdigit() and int(d) != os.getpid():
                argv = processes.process_cmdline(int(d))
                if any(self.root in a for a in argv) and \
                        processes.process_alive(int(d)):
                    pids.append(int(d))
        return pids

    def close(self):
        errors = []
        for s in self.speakers.values():
            try:
                s.stop()
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
        for r in self.responders:
            r.stop()
        self.bird.stop()
        stray = self.our_pids()
        for pid in stray:
            processes.terminate_process(
                pid, processes.process_start_time(pid), 2.0)
        shutil.rmtree(self.root, ignore_errors=True)
        if stray:
            errors.append(RuntimeError(f'stray processes left: {stray}'))
        return errors


@pytest.fixture
def bgp_lab(make_topology):
    """Factory: bgp_lab(n_se=3, password=None, bfd=False) -> BgpLab with
    BIRD started.  Everything is stopped and removed at teardown."""
    labs = []

    def factory(n_se=3, password=None, bfd=False, hold_time=9):
        topo = make_topology(n_se=n_se, n_members=0)
        lab = BgpLab(topo, password=password, bfd=bfd, hold_time=hold_time)
        labs.append(lab)
        lab.bird.start()
        return lab

    yield factory
    errors = []
    for lab in labs:
        errors += lab.close()
    if errors:
        raise errors[0]
