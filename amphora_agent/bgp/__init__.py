"""The SE's BGP speaker (ExaBGP 5): announces the SE's VIPs with the SE as
next hop so that the routers spread VIP traffic over the SEs (ECMP).

See speaker.py for the design (detached ExaBGP adopted across agent
restarts, the API helper socket, stop versus drain).
"""

from amphora_agent.bgp.exabgp_config import config_from_options
from amphora_agent.bgp.exabgp_config import ConfigError
from amphora_agent.bgp.exabgp_config import parse_peer
from amphora_agent.bgp.exabgp_config import Peer
from amphora_agent.bgp.exabgp_config import SpeakerConfig
from amphora_agent.bgp.speaker import BgpError
from amphora_agent.bgp.speaker import BgpNotRunning
from amphora_agent.bgp.speaker import BgpSpeaker
from amphora_agent.bgp.speaker import PeerStatus

__all__ = ['BgpError', 'BgpNotRunning', 'BgpSpeaker', 'ConfigError', 'Peer',
           'PeerStatus', 'SpeakerConfig', 'config_from_options',
           'parse_peer']
