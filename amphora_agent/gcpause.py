"""The cyclic garbage collector paused while a snapshot is parsed or
planned.

Parsing 10,000 load balancers allocates millions of objects, none in a
cycle; each allocation burst triggers collections that walk everything
allocated so far (12 of the 107 s a 10,000 x 16 snapshot took from
scratch under load).  Reference counting still frees what is dropped.
"""

import contextlib
import gc


@contextlib.contextmanager
def paused():
    """gc disabled inside; enabled again after only if it was before (a
    thread already pausing it keeps it paused)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
