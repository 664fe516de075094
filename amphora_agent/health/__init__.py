"""Member health checking for the SE agent, with Octavia semantics.

The SE probes every member of a monitored pool (TCP, HTTP, HTTPS,
TLS-HELLO, PING, UDP-CONNECT) from an asyncio loop in a background thread
and reports Octavia operating statuses (ONLINE, ERROR, OFFLINE,
NO_MONITOR); the agent takes members that are not usable out of the Maglev
rings.  See :mod:`amphora_agent.health.monitor` for the API and the status
semantics, :mod:`amphora_agent.health.probes` for what each probe does.
"""

from amphora_agent.health.monitor import ERROR  # noqa: F401
from amphora_agent.health.monitor import HealthChecker  # noqa: F401
from amphora_agent.health.monitor import HealthState  # noqa: F401
from amphora_agent.health.monitor import InvalidMonitor  # noqa: F401
from amphora_agent.health.monitor import MonitorSpec  # noqa: F401
from amphora_agent.health.monitor import NO_MONITOR  # noqa: F401
from amphora_agent.health.monitor import OFFLINE  # noqa: F401
from amphora_agent.health.monitor import ONLINE  # noqa: F401
from amphora_agent.health.monitor import parse_expected_codes  # noqa: F401
from amphora_agent.health.monitor import Target  # noqa: F401
