import os

# As in amphora_agent/__init__.py: eventlet's green resolver (dnspython,
# imported through oslo.messaging -> oslo.service -> eventlet) is never
# used by the controller, which does not monkey-patch; skipping it saves
# about 0.2 s of every controller start.  This package is the controller
# daemon's alone: the driver inside octavia-api does not import it.
os.environ.setdefault('EVENTLET_NO_GREENDNS', 'yes')
