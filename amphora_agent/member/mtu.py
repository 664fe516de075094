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


def clamp_command(fit, interface, gateway):
    family = '-6 ' if fit.inner_family == 6 else ''
    via = f' via {gateway}' if gateway else ''
    return (f'ip {family}route change default{via} dev {interface} '
            f'advmss {fit.mss}')


def advice(spec, interface, link_mtu, gateways):
    """Report lines for setup: what fits, and what to do where it does
    not.  ``gateways``: {family: gateway or None}."""
    lines = []
    for fit in fits(spec, link_mtu):
        if fit.fits:
            lines.append(f'mtu: {interface} {link_mtu} carries '
                         f'{spec.client_mtu}-byte client packets, '
                         f'{fit.label()}')
        else:
            lines.append(
                f'! mtu: {interface} {link_mtu} < {fit.needed} needed for '
                f'{spec.client_mtu}-byte client packets, {fit.label()}: '
                f'raise the MTU of the whole SE->member path to '
                f'{fit.needed}, or advertise MSS {fit.mss}: '
                + clamp_command(fit, interface,
                                gateways.get(fit.inner_family)))
    return lines
