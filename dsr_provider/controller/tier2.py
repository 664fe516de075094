"""Automatic L7 SE membership of tier-2 load balancers (issue 11).

An L7 service engine's agent joins tooz group ``octavia-dsr.<l7 group>``
(dsr_wire/membership.py) with capabilities

    {"role": "tier2", "tunnel_addresses": {"4": "...", "6": "..."},
     "ready": bool, "draining": bool, "l7_contract": int}

and the elected controller watches every L7 group that tier-2 load
balancers name, every POLL_INTERVAL seconds.  When the ready L7 SEs of a
group change -- one joins ready, leaves, expires (no heartbeat), stops
being ready (and is not draining), starts or stops draining, or changes
its tunnel address --
the store records the new set and bumps the generation of every L4 group
serving a tier-2 load balancer on it in the same transaction
(Store.set_l7_members), and the agents are told at once: the L4 rings
follow within a poll and a fetch.  Membership is a hint only: what the L4
SEs run is still the controller's signed snapshot.

A group whose membership cannot be read (backend down) keeps its last
known set -- an outage of the coordination backend must not empty the
rings -- but, with authentication on, for the L7 SEs not heard from over
RPC within agent_ttl (MembershipWatcher._keep_heard).

The L7 contract (dsr_wire.l7.group_contract): the L7 group's document
carries only the fields every live L7 SE of the group understands -- the
lowest ``l7_contract`` they publish, ready or not (an L7 SE of an earlier
release publishes none: version 1; one that restarts is not ready yet and
must not be given a document it refuses).  Every controller reads it from
tooz when it builds the document (ContractReader, installed as
l7_snapshot.contract_of), so an L7 SE that joins is counted by its first
fetch; the leader's watcher gives the L7 group a new generation when the
version changes and the group's listeners hold a field that it adds or
removes, so that the L7 SEs fetch the document again (the last old L7 SE
upgraded: the TLS settings are sent).
"""

import ipaddress
import threading
import time

from oslo_log import log as logging

from dsr_provider.controller import enrolment
from dsr_provider.controller import l7_snapshot
from dsr_provider.controller import models
from dsr_wire import auth
from dsr_wire import capability_seal
from dsr_wire import l7
from dsr_wire import membership

LOG = logging.getLogger(__name__)

# Seconds between two looks at the L7 groups (the contract: <= 0.5 s).
# A dead L7 SE must be out of the L4 rings within 2 s: membership expiry
# (1 s) + this + the L4 SEs' fetch and apply (0.3-0.5 s); at 0.5 s the sum
# reached 2.02 s end to end.
POLL_INTERVAL = 0.25
# Seconds the list of L7 groups is trusted without a wake: it moves only
# with changes (a tier-2 load balancer created or deleted), and every
# change wakes the leader, which tells the watcher (groups_changed).
GROUPS_REFRESH = 10.0
ROLE = 'tier2'
# L7 SEs whose tooz and signed addresses disagree, remembered to warn once.
MISMATCHES_KEPT = 1024
# Seconds a seal of an L7 SE's capabilities stays good when it does not
# move on (capability_seal.RESEAL_INTERVAL is 1 s): how long a copy of a
# dead SE's entry can keep it in the L4 pools.
SEAL_STALE_AFTER = 5.0
# Seconds either side of now a seal may have been signed (a new leader's
# first look at an entry; then SealClock decides): the RPC window.
SEAL_WINDOW = 60.0
# Seconds a look at a group may take before the backend counts as stalled
# (a read takes milliseconds): the agents' seals wait in it too.
STALLED_READ = 1.0


def tunnel_addresses(addresses, se_id=None):
    """An L7 SE's tunnel addresses ({"4": str, "6": str} with the families
    it has, from its tooz entry or its signed state) or None; a value that
    is not an address of its family is left out (logged when se_id, the
    SE it came from, is given)."""
    if not isinstance(addresses, dict):
        return None
    result = {}
    for family in ('4', '6'):
        value = addresses.get(family)
        if value is None:
            continue
        try:
            address = ipaddress.ip_address(value)
        except (TypeError, ValueError):
            address = None
        if address is None or str(address.version) != family:
            if se_id is not None:
                LOG.warning('L7 SE %s: tunnel_addresses[%r] %r is not an '
                            'IPv%s address; left out', se_id, family, value,
                            family)
            continue
        result[family] = str(address)
    return result or None


def trusted_only(database, members_of, reports_of=None,
                 window=SEAL_WINDOW, clock=time.time):
    """members_of believing, with authentication on, only what the SEs
    enrolled in the group signed: the coordination backend is not
    authenticated, and anybody who reaches it can join an L7 group
    claiming tunnel addresses (the L4 SEs would steer its load balancers'
    traffic there) or an old contract (its TLS settings left out), or
    rewrite an enrolled SE's entry.  reports_of(group, ids) ->
    Store.l7_reports: the SEs' signed report_state.

    - A member not enrolled in the group: left out (logged once).
    - A sealed entry (dsr_wire/capability_seal.py): what the SE signed,
      with its Seal under SEAL_KEY for the watcher's SealClock, when the
      seal is the SE's enrolled key's, for this SE and group, signed
      within `window` seconds, and of the run of its agent that its signed
      report_state names (when it names one: a previous run's seals are
      not its own any more); otherwise left out (logged once a reason).
      A malformed entry is left out, never taken for an unreadable group.
    - An unsealed entry: an L7 agent of an earlier release (they do not
      seal) is believed as before, until it is upgraded -- once its
      signed report_state is stored and names no run that seals; else it
      is not its own, or not known to be, and is left out.  Without
      reports_of, unsealed entries are believed.

    The returned function's `reports` ({group: what reports_of gave at
    its last call}) spares the watcher a second read of them in the same
    look (MembershipWatcher.run_once); its `left_out_of(group)` ({se_id:
    why}) says whom its last call in this thread left out.
    """
    warned = {}     # se_id -> the last reason logged
    # (group, se_id) -> (its entry as read, key, what it opened to): an
    # entry is read four times a second and sealed again once, and a
    # signature check costs about 0.15 ms.
    opened = {}

    def warn_once(l7_group, se_id, reason, recorded=True):
        """Log `reason` once; recorded: what left_out_of says (a fixed
        text; False: nothing -- a stranger's name, of any number)."""
        if recorded:
            local.left_out.setdefault(l7_group, {})[se_id] = \
                'its tooz entry is not believed: ' + (
                    reason if recorded is True else recorded)
        if warned.get(se_id) == reason:
            return
        if len(warned) >= MISMATCHES_KEPT:
            warned.clear()
        warned[se_id] = reason
        LOG.warning('L7 group %s: the coordination backend\'s entry of '
                    'member %s is not believed: %s (docs/security.md)',
                    l7_group, auth.shown(se_id), reason)

    def members(l7_group):
        local.left_out = {l7_group: {}}
        live = members_of(l7_group)
        keys = enrolment.keys_of(database, l7_group)
        for se_id in live:
            if se_id not in keys:
                warn_once(l7_group, se_id, 'not enrolled in this group',
                          recorded=False)
        enrolled = [se_id for se_id in live if se_id in keys]
        reports = reports_of(l7_group, set(enrolled)) \
            if reports_of is not None and enrolled else {}
        if reports_of is not None:
            members.reports[l7_group] = reports
        result = {}
        for se_id in enrolled:
            caps, report = live[se_id], reports.get(se_id) or {}
            stated_boot = report.get('seal_boot')
            if not capability_seal.is_sealed(caps):
                if reports_of is not None and (
                        not report.get('stated') or stated_boot):
                    warn_once(l7_group, se_id, 'unsealed, and its signed '
                              'report_state names a run that seals'
                              if stated_boot else 'unsealed, and no '
                              'signed report_state of it is stored yet')
                    continue
                result[se_id] = caps
                continue
            try:
                plain, seal = _opened(opened, caps, se_id, l7_group,
                                      keys[se_id], window, clock)
            except auth.AuthError as exc:
                # The refusal names the seal's time: recorded without it.
                warn_once(l7_group, se_id, f'its seal: {exc}',
                          recorded='its seal does not verify')
                continue
            if stated_boot and seal.boot != stated_boot:
                warn_once(l7_group, se_id, 'sealed by another run of its '
                          'agent than its signed report_state names')
                continue
            result[se_id] = dict(plain, **{capability_seal.SEAL_KEY: seal})
            warned.pop(se_id, None)
        return result
    members.reports = {}
    # Whom its last call in this thread left out ({se_id: why}): the
    # contract reader calls it from RPC threads too.
    local = threading.local()
    members.left_out_of = lambda l7_group: dict(
        getattr(local, 'left_out', {}).get(l7_group, {}))
    return members


def _opened(cache, caps, se_id, l7_group, key, window, clock):
    """capability_seal.open_seal, its signature checked once per content,
    group and key (cache: {(group, se_id): (caps, key, result)}), its
    window each time."""
    known = cache.get((l7_group, se_id))
    if known is not None and known[0] == caps and known[1] is key:
        capability_seal.check_window(known[2][1], window, clock)
        return known[2]
    result = capability_seal.open_seal(caps, se_id, l7_group, key, window,
                                       clock=clock)
    if len(cache) >= MISMATCHES_KEPT:
        cache.clear()
    cache[(l7_group, se_id)] = (caps, key, result)
    return result


class _Sealed:
    """What SealClock keeps of an L7 SE: its last seal that moved on, when
    (controller's clock), the capabilities it came with, the seal a
    restart() last gave time to, and the least lag seen of its run's
    seals (our wall clock minus its signing time: its clock's offset plus
    the delay of the backend)."""
    __slots__ = ('seal', 'when', 'caps', 'granted', 'least_lag', 'lowered')

    def __init__(self, seal, when, caps, least_lag, lowered):
        self.seal, self.when, self.caps = seal, when, caps
        self.granted = None
        # lowered: our wall clock when least_lag last fell (or was set): a
        # report_state stored before then says nothing about what since.
        self.least_lag, self.lowered = least_lag, lowered


class SealClock:
    """Whether each L7 SE's seal moves on, on the controller's clock: a
    live agent seals again every RESEAL_INTERVAL, a copy of a dead one's
    entry does not move (docs/security.md).  An SE whose seal has not
    moved on for `stale_after` seconds is left out of the L4 pools, and
    an older seal read back (a copy) gives the capabilities of the last
    one that moved on, not its own.  The SEs' clocks are not compared
    with ours: a seal moves on with its count within a run of the agent,
    and to another run when the SE's signed report_state names it (when
    none does, a run that signed later)."""

    def __init__(self, stale_after=None, clock=time.monotonic,
                 wall=time.time):
        self.stale_after = SEAL_STALE_AFTER if stale_after is None \
            else stale_after
        self._clock, self._wall = clock, wall
        self._seen = {}         # (l7 group, se_id) -> _Sealed
        self._stale = set()     # left out, logged
        self._late = set()      # a run's first seal shown late, logged

    def restart(self, l7_group):
        """The group could not be read for a while: its SEs could not
        seal meanwhile either, so their clocks start again -- once per
        seal, and not for those already stale, so that a backend made
        unreadable now and then does not keep a copy fresh."""
        now = self._clock()
        for key, sealed in self._seen.items():
            if key[0] == l7_group and key not in self._stale and \
                    sealed.granted is not sealed.seal:
                sealed.when, sealed.granted = now, sealed.seal

    def fresh(self, l7_group, live, reports=None):
        """{se_id: capabilities} of the group's members (trusted_only's)
        -> those whose seal moved on lately, with the capabilities of that
        seal, and the unsealed (an earlier release's, believed from tooz:
        its membership's expiry).  reports: Store.l7_reports.

        A seal moves on only while it does not fall behind: its lag (our
        wall clock minus its signing time) more than stale_after over the
        least lag of its run is a recording shown late by whoever keeps
        the agent's own writes from the backend -- unless the SE's signed
        report_state, stored since, is as late (its clock went back: the
        run is held to the new lag).  A run's first seal seen
        here is held to the lag of the SE's signed report_state when that
        names the run (reports' 'state_lag'): it may be shown late too."""
        now, wall = self._clock(), self._wall()
        reports = reports or {}
        result, stale = {}, {}
        for key in [k for k in self._seen.keys() | self._stale | self._late
                    if k[0] == l7_group and k[1] not in live]:
            self._seen.pop(key, None)
            self._stale.discard(key)
            self._late.discard(key)
        for se_id, caps in live.items():
            seal = caps.get(capability_seal.SEAL_KEY) \
                if isinstance(caps, dict) else None
            if not isinstance(seal, capability_seal.Seal):
                result[se_id] = caps
                continue
            key = (l7_group, se_id)
            sealed = self._seen.get(key)
            lag = wall - seal.ts
            report = reports.get(se_id) or {}
            if sealed is None or (
                    seal.boot != sealed.seal.boot and self._later_run(
                        sealed.seal, seal, report.get('seal_boot'))):
                # A run first seen (a new leader's first look): its first
                # seal is held to the lag of the signed report_state naming
                # the run, else a seal shown late would set the run's
                # least.  The first only: that lag is on the clock of the
                # controller that stored it, which may be behind ours.
                stated = report.get('state_lag') \
                    if report.get('seal_boot') == seal.boot else None
                if stated is None or lag <= stated + self.stale_after:
                    self._seen[key] = sealed = _Sealed(seal, now, caps,
                                                       lag, wall)
                    self._late.discard(key)
                else:
                    if key not in self._late:
                        self._late.add(key)
                        LOG.warning('L7 SE %s: its seal is shown %.0f s '
                                    'later than its signed report_state '
                                    '(a recording?): not taken for its '
                                    'run\'s', auth.shown(se_id), lag - stated)
                    if sealed is None:
                        continue    # nothing it signed moved on here
            elif seal.boot == sealed.seal.boot and \
                    seal.seq > sealed.seal.seq:
                if lag <= sealed.least_lag + self.stale_after:
                    least = min(lag, sealed.least_lag)
                    self._seen[key] = sealed = _Sealed(
                        seal, now, caps, least,
                        wall if least < sealed.least_lag else sealed.lowered)
                elif self._clock_went_back(sealed, seal, lag, report):
                    LOG.warning('L7 SE %s: its seals come %.0f s later than '
                                'its run\'s least lag, and so does its '
                                'signed report_state: its clock went back; '
                                'its run is held to its new lag',
                                auth.shown(se_id), lag - sealed.least_lag)
                    # The report's lag bounds it too: a seal shown late
                    # (up to stale_after past the report's) must not raise
                    # the bar for the next ones.
                    self._seen[key] = sealed = _Sealed(
                        seal, now, caps, min(lag, report['state_lag']), wall)
            if now - sealed.when <= self.stale_after:
                result[se_id] = sealed.caps
                if key in self._stale:
                    self._stale.discard(key)
                    LOG.info('L7 SE %s: its capabilities are signed again',
                             auth.shown(se_id))
            else:
                stale[se_id] = sealed
        for se_id, sealed in stale.items():
            key = (l7_group, se_id)
            if key not in self._stale:
                self._stale.add(key)
                LOG.warning('L7 SE %s: its sealed capabilities have not '
                            'been signed again for %.0f s (a copy of a '
                            'dead SE\'s entry, or an agent that cannot '
                            'reach the backend): left out of the L4 pools',
                            auth.shown(se_id), now - sealed.when)
        return result

    def _clock_went_back(self, sealed, seal, lag, report):
        """Whether seal, later than its run's least lag allows, is as late
        as the SE's signed report_state stored since that least was set,
        and that report is itself late by more than half of stale_after
        (a report sent on time never excuses a seal shown late): the SE's
        own clock went back (stepped, or slewed by NTP), which a
        recording shown late through the backend cannot make a report over
        RPC say.  Without this an SE whose clock went back by more than
        stale_after stayed out of the pools until its agent restarted.

        `stored` is on the storing controller's clock, `lowered` on ours:
        the controllers' clocks must agree (docs/operations.md, Clocks)."""
        stated, stored = report.get('state_lag'), report.get('state_stored')
        return report.get('seal_boot') == seal.boot and \
            stated is not None and stored is not None and \
            stored > sealed.lowered and \
            stated > sealed.least_lag + self.stale_after / 2 and \
            lag <= stated + self.stale_after

    @staticmethod
    def _later_run(last, seal, stated_boot):
        """Whether seal, of another run than last, is a later run's."""
        if stated_boot:
            return seal.boot == stated_boot
        return seal.ts > last.ts


def ready_members(capabilities, reported=None, signed_only=False,
                  on_mismatch=None, left_out=None):
    """{se_id: capabilities} of a group's live members -> the L7 SEs of
    the L4 pools, {se_id: {'tunnel_addresses': {...}, 'draining': bool}}:
    the ready ones, and the draining ones (weight 0: no new flows, while
    the L4 SEs' connection tables keep the established ones there; the L7
    agent says ready false while it drains).  Members of another role (a
    tier-1 agent in the wrong group), neither ready nor draining, or
    without a usable tunnel address are not members of the L4 pools.

    reported: Store.l7_reports -- each SE's last report over RPC (signed
    when authentication is on), not tooz, which anybody who reaches it
    can write.  What an SE left ERROR alone is kept as the member's
    'unserved', and those objects' L4 pools leave it out
    (l7_snapshot.l4_load_balancer).  signed_only (authentication on): an
    SE counts only once its signed report_state is stored ('stated':
    another kind of report may be stored first), and only while its tooz
    entry names the addresses of that report -- an entry naming others
    (an impostor, or an SE whose new address is not reported yet: its
    old one may be dead or another host's) leaves it out
    (on_mismatch(se_id, claimed, reported) is told); an L7 agent from
    before reported addresses (none in its state) is believed from tooz,
    as before.  left_out: a dict given {se_id: why} of those left out."""
    reported = reported or {}
    left_out = {} if left_out is None else left_out
    result = {}
    for se_id, caps in capabilities.items():
        if not isinstance(caps, dict) or caps.get('role') != ROLE:
            left_out[se_id] = 'not an L7 SE (its role is ' + auth.shown(
                repr(caps.get('role') if isinstance(caps, dict) else None),
                40) + ')'
            continue
        if caps.get('ready') is not True and \
                caps.get('draining') is not True:
            left_out[se_id] = 'not ready'
            continue
        report = reported.get(se_id)
        if signed_only and not (report or {}).get('stated'):
            # Its state not heard from over RPC yet.
            left_out[se_id] = 'no signed report_state of it stored yet'
            continue
        addresses = tunnel_addresses(caps.get('tunnel_addresses'), se_id)
        if addresses is None:
            left_out[se_id] = 'no usable tunnel address'
            continue
        signed = (report or {}).get('tunnel_addresses')
        if signed_only and signed and addresses != signed:
            if on_mismatch is not None:
                on_mismatch(se_id, addresses, signed)
            left_out[se_id] = ('its tooz entry names other tunnel addresses '
                               'than its signed report_state')
            continue
        result[se_id] = {'tunnel_addresses': addresses,
                         'draining': caps.get('draining') is True}
        if report and report.get('unserved'):
            result[se_id]['unserved'] = report['unserved']
    return result


def waiting_fields(contract):
    """What a document of `contract` leaves out, for the logs."""
    return ', '.join(l7.listener_fields_above(contract))


class ContractReader:
    """contract_of(l7_group) for l7_snapshot: the group's L7 contract
    version from its live members.  When they cannot be read, the last
    version read here, or the base version (the fields wait rather than be
    refused by an earlier L7 SE)."""

    def __init__(self, members_of):
        self.members_of = members_of
        self._last = {}
        self._failing = set()

    def __call__(self, l7_group):
        try:
            contract = l7.group_contract(self.members_of(l7_group))
        except Exception as exc:  # noqa: BLE001 -- backend errors
            contract = self._last.get(l7_group, l7.BASE_CONTRACT)
            if l7_group not in self._failing:
                LOG.warning('L7 group %s: membership unreadable (%s); its '
                            'document uses L7 contract %s', l7_group, exc,
                            contract)
            self._failing.add(l7_group)
            return contract
        self._failing.discard(l7_group)
        self._last[l7_group] = contract
        return contract


def bump_l7_group(store, l7_group, low, high):
    """A new generation of l7_group when its document differs between
    contracts low and high (l7_snapshot.holds_fields_between).  True when
    bumped."""
    with store.db.session() as s:
        group = s.get(models.SEGroup, l7_group, with_for_update=True,
                      populate_existing=True)
        if group is None or group.role != l7_snapshot.ROLE:
            return False    # no L7 document yet: its first one will do
        if not l7_snapshot.holds_fields_between(s, l7_group, low, high):
            return False
        group.generation += 1
        return True


def tooz_members(coordinator, recall=None):
    """members_of(l7_group) reading the live members from tooz; through
    recall (membership_recall.MembershipRecall) when given, so that a
    backend that lost its state does not empty the group."""
    def members_of(l7_group):
        group = membership.group_id(l7_group)
        if recall is None:
            return membership.members(coordinator, group)
        return recall.read(group, lambda g: membership.members(
            coordinator, g), what='L7 SE capabilities')
    return members_of


class MembershipWatcher:
    def __init__(self, store, members_of, on_change=None,
                 clock=time.monotonic, signed_only=False, wall=time.time,
                 damping=None):
        """members_of(l7_group) -> {se_id: capabilities}; on_change(): a
        generation was bumped (tell the agents now); signed_only: the L4
        pools steer to the addresses of the L7 SEs' signed reports
        (ready_members); damping: l7_damping.FlapDamping (None: none)."""
        self.store = store
        self.members_of = members_of
        self.on_change = on_change
        self.signed_only = signed_only
        self._seals = SealClock(clock=clock, wall=wall)
        self._damping = damping
        # {se_id: the tooz addresses last warned about}: one line a change.
        self._mismatched = {}
        self._clock = clock
        self._failing = set()
        # {l7 group: L7 contract version last seen}: empty in a new term.
        self._contracts = {}
        self._groups = None         # the L7 groups, as last read
        # {l7 group: ({se_id: why}, when)} last written
        # (Store.set_l7_left_out): empty in a new term, so that its first
        # look writes them.
        self._left_out = {}
        self._groups_read = 0.0
        self._groups_stale = False

    def groups_changed(self):
        """Something was stored (the leader was woken): read the L7 groups
        again at the next look instead of trusting the last list."""
        self._groups_stale = True

    def _l7_groups(self):
        """The store's L7 groups, read again only when told or after
        GROUPS_REFRESH: four looks a second each cost a query otherwise,
        in every deployment, tier-2 or not."""
        now = self._clock()
        if self._groups is None or self._groups_stale or \
                now - self._groups_read >= GROUPS_REFRESH:
            # Cleared before the read: a change committed during it marks
            # the list stale again.
            self._groups_stale = False
            self._groups = self.store.l7_groups()
            self._groups_read = now
        return self._groups

    def run_once(self):
        """One look at every L7 group; returns the groups bumped (L4
        groups for their rings, then L7 groups for their contract)."""
        bumped = []
        l7_bumped = []
        for l7_group in self._l7_groups():
            try:
                asked = self._clock()
                live = self.members_of(l7_group)
                # Read by trusted_only in this look already (of every
                # enrolled member: a superset of `live`), else here.
                reports = getattr(self.members_of, 'reports', {}).pop(
                    l7_group, None)
                if reports is None:
                    reports = self.store.l7_reports(l7_group, set(live))
                if l7_group in self._failing or \
                        self._clock() - asked > STALLED_READ:
                    # The backend was away or stalled: the agents could
                    # not seal meanwhile either.
                    self._seals.restart(l7_group)
                left_out_of = getattr(self.members_of, 'left_out_of',
                                      None)
                left_out = left_out_of(l7_group) if left_out_of else {}
                # With authentication on, a sealed entry counts while its
                # seal moves on (a copy of a dead SE's does not).
                serving = self._seals.fresh(l7_group, live, reports) \
                    if self.signed_only else live
                left_out.update(dict.fromkeys(
                    set(live) - set(serving), 'its sealed capabilities did '
                    'not move on lately (not signed again, or shown late: '
                    'the leader\'s log says which)'))
                members = ready_members(
                    serving, reports, signed_only=self.signed_only,
                    on_mismatch=self._mismatch, left_out=left_out)
                if self._damping is not None:
                    admitted = self._damping.admit(l7_group, members)
                    left_out.update(dict.fromkeys(
                        set(members) - set(admitted), 'kept out by flap '
                        'damping (it left without draining too often '
                        'lately)'))
                    members = admitted
            except Exception as exc:  # noqa: BLE001 -- backend errors
                if self._damping is not None:
                    self._damping.forget_look(l7_group)
                if l7_group not in self._failing:
                    LOG.warning('L7 group %s: membership unreadable (%s); '
                                'its L4 pools keep their L7 SEs%s',
                                l7_group, exc, ' that still report'
                                if self.signed_only else '')
                self._failing.add(l7_group)
                if not self.signed_only:
                    continue
                try:
                    bumped.extend(self._keep_heard(l7_group))
                except Exception:  # noqa: BLE001 -- the database too
                    LOG.debug('L7 group %s: reports unreadable', l7_group,
                              exc_info=True)
                continue
            self._failing.discard(l7_group)
            groups = self.store.set_l7_members(l7_group, members)
            self._record_left_out(l7_group, left_out, reports)
            if self._damping is not None:
                self._damping.flush()
            if groups:
                LOG.info('L7 group %s: ready L7 SEs now %s (draining: %s; '
                         'not serving: %s); L4 group(s) %s get a new '
                         'generation', l7_group,
                         sorted(members) or 'none',
                         sorted(s for s, m in members.items()
                                if m['draining']) or 'none',
                         {s: m['unserved'] for s, m in sorted(
                             members.items()) if m.get('unserved')} or
                         'nothing', ', '.join(groups))
                bumped.extend(groups)
            if self._follow_contract(l7_group, live):
                l7_bumped.append(l7_group)
        bumped.extend(l7_bumped)
        if bumped and self.on_change is not None:
            self.on_change()
        return bumped

    def _record_left_out(self, l7_group, left_out, reports):
        """Store why the group's L7 SEs that report are out of the L4
        pools (what dsr-status shows of them) when that changed, or every
        GROUPS_REFRESH (another leader may have written meanwhile: a
        failover and back).  Only SEs that report (a row each): whatever
        joins the backend under any name is not written.  A failed write
        (two leaders for a moment) is logged, never the look's end: the
        pools were already stored."""
        left_out = {se_id: reason for se_id, reason in left_out.items()
                    if se_id in reports}
        last = self._left_out.get(l7_group)
        if last is not None and last[0] == left_out and \
                self._clock() - last[1] < GROUPS_REFRESH:
            return
        try:
            self.store.set_l7_left_out(l7_group, left_out)
        except Exception as exc:  # noqa: BLE001 -- a status hint only
            self._left_out.pop(l7_group, None)
            LOG.warning('L7 group %s: why its L7 SEs are out of the L4 '
                        'pools not recorded (%s); again at the next look',
                        l7_group, exc)
            return
        self._left_out[l7_group] = (left_out, self._clock())

    def _keep_heard(self, l7_group):
        """The group's membership cannot be read (authentication on: the
        SEs' reports are signed): keep its L7 SEs -- an
        outage of the backend must not empty the pools -- but only those
        still heard from over RPC within agent_ttl; a dead one would stay
        for as long as the backend stays unreadable (or is kept
        unreadable by whoever writes it).  Returns the L4 groups
        bumped."""
        members = self.store.l7_members(l7_group)
        heard = self.store.heard_since(
            l7_group, time.time() - self.store.agent_ttl)
        kept = {se_id: m for se_id, m in members.items() if se_id in heard}
        if kept == members:
            return []
        LOG.warning('L7 group %s: membership unreadable; L7 SE(s) %s not '
                    'heard from for %.0f s leave the L4 pools', l7_group,
                    ', '.join(sorted(set(members) - set(kept))),
                    self.store.agent_ttl)
        return self.store.set_l7_members(l7_group, kept)

    def _mismatch(self, se_id, claimed, reported):
        if self._mismatched.get(se_id) == claimed:
            return
        if len(self._mismatched) >= MISMATCHES_KEPT:
            self._mismatched.clear()
        self._mismatched[se_id] = claimed
        LOG.warning('L7 SE %s: the coordination backend gives tunnel '
                    'addresses %s, its signed report %s: left out of the '
                    'L4 pools until they agree (docs/security.md)',
                    auth.shown(se_id), auth.shown(claimed), reported)

    def _follow_contract(self, l7_group, live):
        """Note the group's L7 contract version; a new generation when it
        changed (or is first seen in this term: the L7 SEs may run a
        document of another version) and that changes the document.
        True when bumped."""
        contract = l7.group_contract(live)
        known = self._contracts.get(l7_group)
        if contract == known:
            return False
        self._contracts[l7_group] = contract
        if contract < l7.CONTRACT_VERSION:
            LOG.warning('L7 group %s: L7 SE(s) %s publish L7 contract %s, '
                        'not %s (an earlier release): its listeners\' %s '
                        'wait for their upgrade (left out of the L7 '
                        'document; HAProxy keeps its defaults)', l7_group,
                        ', '.join(sorted(
                            se for se, caps in live.items()
                            if l7.is_l7_se(caps)
                            and l7.contract_of(caps) < l7.CONTRACT_VERSION)),
                        contract, l7.CONTRACT_VERSION,
                        waiting_fields(contract))
        elif known is not None:
            LOG.info('L7 group %s: every L7 SE speaks L7 contract %s: its '
                     'listeners\' %s are sent', l7_group, contract,
                     waiting_fields(known))
        low, high = (l7.BASE_CONTRACT, l7.CONTRACT_VERSION) \
            if known is None else sorted((known, contract))
        if not bump_l7_group(self.store, l7_group, low, high):
            return False
        LOG.info('L7 group %s: L7 contract %s; a new generation', l7_group,
                 contract)
        return True

    def run(self, stop, leading, interval=POLL_INTERVAL):
        """Until stop (threading.Event) is set: a look every interval
        while leading() is true."""
        while not stop.wait(interval):
            if not leading():
                self._groups = None     # a new term reads them afresh
                # Another leader may have written other reasons meanwhile.
                self._left_out.clear()
                if self._damping is not None:
                    self._damping.new_term()
                continue
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 -- keep watching
                LOG.exception('L7 membership round failed; retrying')


def start(store, members_of, on_change, leading, interval=POLL_INTERVAL,
          signed_only=False, damping=None):
    """The watcher in a thread of its own (the reporter's round can take
    seconds on a slow Octavia; membership must not wait for it), and the
    L7 documents' contract read from members_of.  Returns (thread, stop
    event, watcher)."""
    # Every controller builds L7 documents (get_config), leading or not.
    l7_snapshot.contract_of = ContractReader(members_of)
    stop = threading.Event()
    watcher = MembershipWatcher(store, members_of, on_change,
                                signed_only=signed_only, damping=damping)
    thread = threading.Thread(target=watcher.run,
                              args=(stop, leading, interval),
                              name='tier2-membership', daemon=True)
    thread.start()
    return thread, stop, watcher
