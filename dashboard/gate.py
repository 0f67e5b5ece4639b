"""The password of an exposed dashboard (python -m dashboard --host 0.0.0.0), without Streamlit.

Streamlit has no login of its own, so app.py asks for the password before it draws or reads
anything. The launcher (serve.start) hands the Streamlit server a salted scrypt hash of
$LIVEPROP_PASSWORD in $LIVEPROP_PASSWORD_HASH, not the plain text, so the gate itself puts nothing
typeable into the environment of the server and of the workers it launches (they inherit it). A plain
$LIVEPROP_PASSWORD is honoured too, so `streamlit run dashboard/app.py` with it set is gated as well.
With neither set (the local default) there is no gate.

Wrong tries cost their client address a wait that doubles with each one (Backoff): the server keeps
it, so a reload, a new tab or a second browser from the same address starts no afresh, and a try
before the wait is over is not checked. The server as a whole also checks at most SERVER_TRIES wrong
passwords per SERVER_WINDOW_S, whatever the addresses.

This module does not import Streamlit: the launcher uses it to make the hash.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import OrderedDict, deque
from typing import NamedTuple

PASSWORD_VAR = "LIVEPROP_PASSWORD"
HASH_VAR = "LIVEPROP_PASSWORD_HASH"
WRONG_TRY_S = 1.0  # an address's wait after its first wrong password; it doubles with each next one
MAX_WAIT_S = 60.0  # ... up to this
SERVER_TRIES, SERVER_WINDOW_S = 30, 60.0  # wrong passwords checked per window, from all addresses together
# addresses remembered; the one whose last wrong try is oldest is forgotten first (at SERVER_TRIES a
# minute, 4,096 addresses take over two hours: far longer than any wait)
ADDRESSES = 4096


def _scrypt(password: str, salt: bytes) -> bytes:
    # scrypt's interactive-login parameters: about 50 ms and 16 MiB per try
    return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)


def hash_password(password: str) -> str:
    """ "salt$digest" in hex, for $LIVEPROP_PASSWORD_HASH."""
    salt = secrets.token_bytes(16)
    return f"{salt.hex()}${_scrypt(password, salt).hex()}"


def required(environ=os.environ) -> bool:
    return bool(environ.get(HASH_VAR) or environ.get(PASSWORD_VAR))


def unlocks(attempt: str, environ=os.environ) -> bool:
    """Whether `attempt` is the password, compared in constant time."""
    if stored := environ.get(HASH_VAR):
        salt, digest = stored.split("$")
        return hmac.compare_digest(_scrypt(attempt, bytes.fromhex(salt)), bytes.fromhex(digest))
    return hmac.compare_digest(attempt.encode(), environ.get(PASSWORD_VAR, "").encode())


class Answer(NamedTuple):
    unlocked: bool
    checked: bool  # False: the try came before its address's wait was over; the password was not compared
    wait_s: float  # before this address's next try may be checked (0 when unlocked)


class Backoff:
    """Wrong passwords, per client address and for the server as a whole. One per Streamlit server,
    shared by every session (each runs on its own thread), so it is thread-safe; and it is bounded."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        # address -> (wrong tries in a row, when its wait ends); the latest wrong try last
        self._addresses: OrderedDict[str | None, tuple[int, float]] = OrderedDict()
        self._recent: deque[float] = deque(maxlen=SERVER_TRIES)  # when the server's latest wrong tries came

    def attempt(self, address: str | None, password: str, environ=os.environ) -> Answer:
        """Check `password` for a browser at `address` (None, as Streamlit gives loopback, is an address too)."""
        with self._lock:  # held through the compare (scrypt, about 50 ms): no two tries overlap
            now = self._clock()
            if (wait := self._wait(address, now)) > 0:
                return Answer(False, False, wait)
            wrong, _ = self._addresses.pop(address, (0, now))
            if unlocks(password, environ):
                return Answer(True, True, 0.0)
            self._addresses[address] = (wrong + 1, now + min(WRONG_TRY_S * 2**wrong, MAX_WAIT_S))
            if len(self._addresses) > ADDRESSES:
                self._addresses.popitem(last=False)
            self._recent.append(now)
            return Answer(False, True, self._wait(address, now))

    def _wait(self, address, now) -> float:
        until = self._addresses.get(address, (0, now))[1]
        if len(self._recent) == SERVER_TRIES:  # the window is full until its oldest try leaves it
            until = max(until, self._recent[0] + SERVER_WINDOW_S)
        return round(max(0.0, until - now), 6)  # (now + 3600) - now can be 3600.0000000002: "3601 s" at ceil
