"""MTU and MSS arithmetic for the encapsulation overhead.

A client packet of ``client_mtu`` bytes grows by the SE's header on the way
to the member, so the SE->member path must carry client_mtu + overhead.
Where it cannot, the member can advertise a smaller TCP MSS on the route its
replies take (advmss), so that clients never send segments too big to be
tunnelled (the SE's ICMP "too big" is the fallback, and ICMP is often
filtered).
"""

import dataclasses

from amphora_agent.member import spec as spec_mod

INNER_HEADERS = {4: 40, 6: 60}   # IP + TCP headers of the inner packet


@dataclasses.dataclass
class Fit:
    inner_family: int    # the VIP's family
    outer_family: int    # the tunnel address's family
    encap: str
    overhead: int
    link_mtu: int
    needed: int          # link MTU that carries full-size client packets
    mss: int             # the largest MSS that fits this link

    @property
    def fits(self):
        return self.link_mtu >= self.needed

    def label(self):
        inner = f'IPv{self.inner_family}'
        return (f'{inner} in {self.encap} over IPv{self.outer_family} '
                f'(+{self.overhead})')


def fits(spec, link_mtu):
    """A Fit per (VIP family, tunnel family), for the largest overhead among
    the member's encapsulations."""
    result = []
    for inner in spec.families:
        for address in spec.addresses:
            outer = address.version
            encap = max(spec.encaps,
                        key=lambda e: spec_mod.overhead(e, outer))
            extra = spec_mod.overhead(encap, outer)
            result.append(Fit(inner, outer, encap, extra, link_mtu,
                              spec.client_mtu + extra,
                              link_mtu - extra - INNER_HEADERS[inner]))
    return result


def clamp_command(inner_family, mss, interface, gateway):
    family = '-6 ' if inner_family == 6 else ''
    via = f' via {gateway}' if gateway else ''
    return (f'ip {family}route change default{via} dev {interface} '
            f'advmss {mss}')


def shortfall(spec, link_mtu, advmss=None):
    """None when full-size client packets fit every encapsulation, else
    (link MTU needed, the worst Fit, {VIP family: largest MSS that fits})
    over the families whose default route does not already advertise a
    small enough MSS (``advmss``: {family: metric, 0 when unset})."""
    advmss = advmss or {}
    short = [f for f in fits(spec, link_mtu) if not f.fits]
    mss = {}
    for fit in short:
        mss[fit.inner_family] = min(mss.get(fit.inner_family, fit.mss),
                                    fit.mss)
    mss = {family: value for family, value in mss.items()
           if not 0 < advmss.get(family, 0) <= value}
    if not mss:
        return None
    worst = max(short, key=lambda f: f.needed)
    return worst.needed, worst, mss


def fix(interface, needed, mss, gateways):
    return (f'ip link set dev {interface} mtu {needed} (the whole '
            f'SE->member path), or clamp the MSS: ' + '; '.join(
                clamp_command(family, value, interface, gateways.get(family))
                for family, value in sorted(mss.items())))


def advice(spec, interface, link_mtu, gateways, advmss=None):
    """The setup's report line: whether client packets fit, and what to
    do where they do not.  ``gateways``: {family: default gateway}."""
    short = shortfall(spec, link_mtu, advmss)
    if short is None:
        most = max(f.overhead for f in fits(spec, link_mtu))
        return [f'mtu: {interface} {link_mtu} carries {spec.client_mtu}-byte '
                f'client packets in every encapsulation (up to +{most})']
    needed, worst, mss = short
    return [f'! mtu: {interface} {link_mtu} < {needed} needed for '
            f'{spec.client_mtu}-byte client packets ({worst.label()}): '
            + fix(interface, needed, mss, gateways)]
