"""Secrets from systemd credentials: ``$CREDENTIALS_DIRECTORY/NAME`` fills the environment
variable ``NAME`` when it is not set.

layerbot reads every secret from an environment variable (``SLACK_BOT_TOKEN``, a connector's
``password_env``, libpq's ``PGPASSWORD``). A unit's ``LoadCredential=NAME:/etc/layerbot/credentials/NAME``
hands the secret over as a file readable only by the service's user and kept out of
``systemctl show``; copying it into the environment once, before any command runs, serves every
reader (the catalog's checks, the adapters, psycopg) alike.
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from pathlib import Path

DIRECTORY_VARIABLE = "CREDENTIALS_DIRECTORY"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class CredentialError(Exception):
    """A credential that cannot become an environment variable; names the file, never its value."""


def load_credentials(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Set each unset variable from the credential of its name; returns the names set.

    An explicitly set variable wins over the credential (an operator's override). Only one
    trailing newline is removed: ``echo token > file`` adds it, a secret may end in spaces.
    """
    environ = os.environ if environ is None else environ
    directory = environ.get(DIRECTORY_VARIABLE)
    if not directory:
        return []
    root = Path(directory)
    try:
        entries = sorted(root.iterdir())
    except OSError as exc:
        raise CredentialError(f"${DIRECTORY_VARIABLE} {root}: cannot list it: {exc.strerror}") from None
    loaded = []
    for path in entries:
        if not path.is_file():
            continue
        if not _ENV_NAME.fullmatch(path.name):
            raise CredentialError(f"credential {path}: {path.name!r} is not an environment variable name "
                                  "(letters, digits and '_', not starting with a digit)")
        if environ.get(path.name):
            continue
        environ[path.name] = _read(path)
        loaded.append(path.name)
    return loaded


def _read(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CredentialError(f"credential {path}: cannot read it: {exc.strerror}") from None
    if b"\0" in data:
        raise CredentialError(f"credential {path}: contains a NUL byte (an environment variable cannot)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialError(f"credential {path}: not UTF-8 text") from None
    return text.removesuffix("\r\n") if text.endswith("\r\n") else text.removesuffix("\n")
