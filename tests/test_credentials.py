"""Secrets from systemd's ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=`` in the units)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli.commands import main
from bot.cli.credentials import CredentialError, load_credentials

XEN_CATALOG = """\
layers:
  base-os: {kind: os, source: layers/os.tar}
connectors:
  xen:
    type: xenserver
    host: xenpool.lab.example
    user_env: LAYERBOT_TEST_XEN_USER
    password_env: LAYERBOT_TEST_XEN_PASSWORD
    insecure: true
    sr: Local storage
    network: Pool-wide network associated with eth0
    vm_template: Windows 10 (64-bit)
templates:
  win10:
    os_layer: base-os
    connector: xen
    disk: {size_gib: 1}
"""


def test_a_credential_fills_its_unset_variable_without_the_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "SLACK_BOT_TOKEN").write_text("xoxb-from-credential\n")
    (tmp_path / "ENDS_IN_SPACES").write_text("p4ss  \r\n")
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert load_credentials(environ) == ["ENDS_IN_SPACES", "SLACK_BOT_TOKEN"]
    assert environ["SLACK_BOT_TOKEN"] == "xoxb-from-credential"
    assert environ["ENDS_IN_SPACES"] == "p4ss  "


def test_a_set_variable_wins_and_no_directory_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "PGPASSWORD").write_text("from-credential")
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path), "PGPASSWORD": "from-environment"}
    assert load_credentials(environ) == []
    assert environ["PGPASSWORD"] == "from-environment"
    assert load_credentials({"PGPASSWORD": "x"}) == []


@pytest.mark.parametrize(("name", "data", "expected"), [
    ("slack-token", b"x", "'slack-token' is not an environment variable name"),
    ("BINARY", b"\xff\xfe", "not UTF-8 text"),
    ("WITH_NUL", b"a\0b", "contains a NUL byte"),
])
def test_an_unusable_credential_is_named_never_shown(tmp_path: Path, name: str, data: bytes,
                                                      expected: str) -> None:
    (tmp_path / name).write_bytes(data)
    with pytest.raises(CredentialError) as caught:
        load_credentials({"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert expected in str(caught.value)
    assert str(tmp_path / name) in str(caught.value)
    assert data.decode("latin-1") not in str(caught.value).replace(str(tmp_path / name), "")


def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(CredentialError, match=f"{tmp_path / 'gone'}: cannot list it"):
        load_credentials({"CREDENTIALS_DIRECTORY": str(tmp_path / "gone")})


@pytest.fixture
def xen_catalog(catalog_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A catalog whose connector's secrets are in variables this test owns (restored after)."""
    for name in ("LAYERBOT_TEST_XEN_USER", "LAYERBOT_TEST_XEN_PASSWORD"):
        monkeypatch.setenv(name, "")  # empty is unset to layerbot; monkeypatch removes it after
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = catalog_dir / "layerbot.yml"
    path.write_text(XEN_CATALOG)
    return path


def test_the_cli_reads_a_connectors_secrets_from_credentials(xen_catalog: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["--config", str(xen_catalog), "--db", str(tmp_path / "t.db"), "templates"]
    without = CliRunner().invoke(main, args)
    assert without.exit_code == 2
    assert "environment variable LAYERBOT_TEST_XEN_PASSWORD (password_env) is not set" in without.output

    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "LAYERBOT_TEST_XEN_USER").write_text("root\n")
    (credentials / "LAYERBOT_TEST_XEN_PASSWORD").write_text("distinctive-xen-secret-7f3a\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    with_credentials = CliRunner().invoke(main, args)
    assert with_credentials.exit_code == 0, with_credentials.output
    assert "win10" in with_credentials.output
    assert "distinctive-xen-secret-7f3a" not in with_credentials.output
    assert os.environ["LAYERBOT_TEST_XEN_PASSWORD"] == "distinctive-xen-secret-7f3a"


def test_an_unusable_credential_is_a_usage_error(xen_catalog: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bad-name").write_text("s3cret-value")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    result = CliRunner().invoke(main, ["--config", str(xen_catalog), "templates"])
    assert result.exit_code == 2
    assert "'bad-name' is not an environment variable name" in result.output
    assert "s3cret-value" not in result.output
