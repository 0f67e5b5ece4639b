"""The password of an exposed dashboard (python -m dashboard --host 0.0.0.0), without Streamlit.

Streamlit has no login of its own, so app.py asks for the password before it draws or reads
anything. The launcher (serve.start) hands the Streamlit server a salted scrypt hash of
$LIVEPROP_PASSWORD in $LIVEPROP_PASSWORD_HASH, not the plain text, so the gate itself puts nothing
typeable into the environment of the server and of the workers it launches (they inherit it). (With
the local Visdom server on, python -m dashboard does pass the plain password as
$LIVEPROP_VISDOM_PASSWORD: the runs' Visdom sink logs in with it.) A plain $LIVEPROP_PASSWORD is
honoured too, so `streamlit run dashboard/app.py` with it set is gated as well. With neither set
(the local default) there is no gate.

This module does not import Streamlit: the launcher uses it to make the hash.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

PASSWORD_VAR = "LIVEPROP_PASSWORD"
HASH_VAR = "LIVEPROP_PASSWORD_HASH"
WRONG_TRY_S = 1.0  # a wrong password costs its session this long: a guesser gets one try a second


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
