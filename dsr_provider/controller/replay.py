"""Replay detection shared by every controller of a deployment.

A signed agent message is valid for `auth_window` seconds either side of
its timestamp.  Its nonce is recorded in the controller database, which
every controller of the deployment shares and which survives restarts: the
same message again -- to this controller, to another one, or after a
restart -- is a replay.  The database, not Redis: the guard already reads
it on every message (the SE's enrolment) and every message needs it anyway
(get_config reads the snapshot from it, reports are stored in it), so
checking replays there adds no service an agent message depends on.  When
it does not answer, messages are refused (fail-closed; docs/security.md).
"""

import hashlib
import threading
import time

from sqlalchemy import exc as sa_exc

from dsr_provider.controller import models


class SharedNonces:
    """auth.verify_context's nonce store, in the controller database."""

    def __init__(self, database, window):
        self.database = database
        self.window = window
        self._lock = threading.Lock()
        self._next_purge = 0.0

    def add(self, nonce, ts):
        """False when any controller accepted nonce already.  Raises the
        database's error when it cannot tell (the guard refuses then)."""
        now = time.time()
        self._purge(now)
        row = models.SeenNonce(
            digest=hashlib.sha256(nonce.encode()).hexdigest(),
            expires_at=float(ts) + self.window)
        try:
            with self.database.session() as s:
                s.add(row)
        except sa_exc.IntegrityError:
            return False        # the primary key: seen before
        return True

    def _purge(self, now):
        """At most once a window per controller.  A row outlives its
        message's window by one more window, so a controller whose clock is
        ahead (by less than the window) does not purge a nonce another
        controller would still accept the message with."""
        with self._lock:
            if now < self._next_purge:
                return
            self._next_purge = now + self.window
        with self.database.session() as s:
            s.query(models.SeenNonce).filter(
                models.SeenNonce.expires_at < now - self.window).delete(
                    synchronize_session=False)
