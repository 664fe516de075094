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


class _Seen(Exception):
    pass


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
        try:
            with self.database.session() as s:
                if not self.bound(s).add(nonce, ts):
                    raise _Seen     # rolls the spoilt transaction back
        except _Seen:
            return False
        return True

    def bound(self, session):
        """This store inside the caller's transaction (the guard checks a
        message in one): the nonce's row is flushed at once, so a replay
        is told before the caller goes on, and is committed with the
        caller's transaction.  After a False the transaction is spoilt:
        the caller must end it by raising (rolled back)."""
        return _InTransaction(self, session)

    def _row(self, nonce, ts):
        return models.SeenNonce(
            digest=hashlib.sha256(nonce.encode()).hexdigest(),
            expires_at=float(ts) + self.window)

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


class _InTransaction:
    """SharedNonces.add in a given session (auth.verify_context's nonce
    store for one message)."""

    def __init__(self, nonces, session):
        self.nonces, self.session = nonces, session

    def add(self, nonce, ts):
        # The purge is a transaction of its own (at most once a window).
        self.nonces._purge(time.time())
        self.session.add(self.nonces._row(nonce, ts))
        try:
            self.session.flush()
        except sa_exc.IntegrityError:
            return False        # the primary key: seen before
        return True
