import os

# oslo.messaging's server module imports oslo.service, which imports
# eventlet, whose green socket module imports dnspython for its green
# resolver: about 0.2 s of every SE-side process's start (dsr-agent,
# dsr-l7, dsr-member).  Nothing here monkey-patches or uses green sockets,
# so the resolver is never used; eventlet skips it under this variable.
os.environ.setdefault('EVENTLET_NO_GREENDNS', 'yes')
