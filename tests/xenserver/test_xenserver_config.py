"""``type: xenserver`` settings are checked at load; errors name the key and the value."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from adapters import config_model
from adapters.xenserver.xapi_session import translate_details

from .conftest import PASSWORD_ENV, USER_ENV

BASE = {"type": "xenserver", "host": "xen.example", "user_env": USER_ENV,
        "password_env": PASSWORD_ENV, "sr": "Local storage", "network": "Network 0",
        "vm_template": "Windows 10 (64-bit)"}


def problems(**settings: Any) -> str:
    with pytest.raises(ValidationError) as err:
        config_model("xenserver").model_validate({**BASE, **settings})
    return str(err.value)


def test_a_valid_connector_loads_and_a_bare_host_is_https(xen_env: None) -> None:
    cfg = config_model("xenserver").model_validate(BASE)
    assert cfg.url == "https://xen.example"  # type: ignore[attr-defined]


@pytest.mark.parametrize("settings,expected", [
    ({"host": "ftp://xen.example"}, r"host\n.*'ftp://xen.example' is not a host name or an http"),
    ({"host": "https://xen.example/path?x=1"}, r"host\n.*give scheme, host and port only"),
    ({"console_url": "https://xo.example/#/vms"}, r"console_url\n.*has no \{uuid\} placeholder"),
    ({"console_url": "https://xo/{uuid}/{name}"}, r"console_url\n.*only \{uuid\} may be filled in"),
    ({"sr": ""}, r"sr\n.*at least 1 character"),
    ({"insecure": True, "ca_file": "/nonexistent.pem"}, r"set either insecure or ca_file, not both"),
    ({"vm_templat": "x"}, r"vm_templat\n.*Extra inputs are not permitted"),
])
def test_bad_settings_name_the_key_and_value(xen_env: None, settings: dict[str, Any], expected: str) -> None:
    text = problems(**settings)
    assert re.search(expected, text), text


def test_unset_credentials_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(USER_ENV, raising=False)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    text = problems()
    assert f"environment variable {USER_ENV} (user_env) is not set" in text
    assert f"environment variable {PASSWORD_ENV} (password_env) is not set" in text


def test_session_invalid_never_shows_the_session_reference() -> None:
    error = translate_details(["SESSION_INVALID", "OpaqueRef:secret-session"], "reading")
    assert "OpaqueRef" not in str(error) and "SESSION_INVALID" in str(error)
