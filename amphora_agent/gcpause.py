"""The cyclic garbage collector paused while a snapshot is parsed or
planned.

Parsing 10,000 load balancers allocates millions of objects, none in a
cycle; each allocation burst triggers collections that walk everything
allocated so far (12 of the 107 s a 10,000 x 16 snapshot took from
scratch under load).  Reference counting still frees what is dropped.
"""

import contextlib
import gc
import threading

_lock = threading.Lock()
_pausers = 0            # threads inside paused()
_was_enabled = False    # gc's state when the first of them entered


@contextlib.contextmanager
def paused():
    """gc disabled inside; enabled again when the last thread pausing it
    leaves, and only if it was enabled when the first one entered."""
    global _pausers, _was_enabled
    with _lock:
        if _pausers == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pausers += 1
    try:
        yield
    finally:
        with _lock:
            _pausers -= 1
            if _pausers == 0 and _was_enabled:
                gc.enable()
