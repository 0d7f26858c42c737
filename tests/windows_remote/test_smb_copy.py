"""The SMB copy against a real Samba server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from adapters.base import AuthError, PlatformTimeoutError, RetryableError
from adapters.retry import RetryPolicy
from adapters.windows_remote.smb_copy import SmbCopier, SmbShare, translate

from .samba_peer import SMB_PASSWORD_ENV, SMB_USER_ENV, SambaPeer

pytestmark = pytest.mark.timeout(120)
CHUNK = 1 << 20
QUICK = RetryPolicy(attempts=3, budget=30.0, first_delay=0.05, max_delay=0.1)


def disk(path: Path, mib: int = 24) -> Path:
    """Random data, runs of zeros (skipped by the copy) and a ragged end (not whole chunks)."""
    with open(path, "wb") as f:
        for i in range(mib):
            f.write(bytes(CHUNK) if i % 3 == 1 else os.urandom(CHUNK))
        f.write(os.urandom(1000))
        f.write(bytes(3 * CHUNK + 5))  # ends in zeros: the file's end is set, not written
    return path


def same_bytes(a: Path, b: Path) -> bool:
    """Compared by digest: pytest's diff of two large byte strings takes minutes."""
    return hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()


def copier(samba: SambaPeer, encrypt: bool = True) -> SmbCopier:
    share = SmbShare("127.0.0.1", SMB_USER_ENV, SMB_PASSWORD_ENV, samba.port, "ntlm", encrypt, 10)
    return SmbCopier(share, CHUNK, QUICK)


async def test_copy_equals_the_disk_byte_for_byte_and_remove_deletes_it(smb_env: SambaPeer,
                                                                       tmp_path: Path) -> None:
    source = disk(tmp_path / "d.vhdx")
    notes: list[tuple[int, int]] = []

    async def progress(done: int, total: int) -> None:
        notes.append((done, total))

    smb = copier(smb_env)
    unc = f"{smb_env.unc}\\d.vhdx"
    try:
        assert await smb.copy(source, unc, progress) == source.stat().st_size
        assert same_bytes(smb_env.share_dir / "d.vhdx", source)
        assert notes[-1] == (source.stat().st_size,) * 2
        assert [d for d, _ in notes] == sorted(d for d, _ in notes) and len(notes) > 3
        assert await smb.size(unc) == source.stat().st_size
        assert await smb.remove(unc) is True
        assert smb_env.files() == [] and await smb.size(unc) is None
        assert await smb.remove(unc) is False  # idempotent
    finally:
        await smb.close()


async def test_a_copy_whose_connection_drops_once_starts_again_and_completes(
        smb_env: SambaPeer, tmp_path: Path) -> None:
    source = disk(tmp_path / "d.vhdx", 8)
    smb = copier(smb_env)
    cut = smb_env.cut_copy_after_first_chunk(smb)
    unc = f"{smb_env.unc}\\again.vhdx"
    try:
        assert await smb.copy(source, unc, _ignore) == source.stat().st_size
        assert cut == [CHUNK]  # the first attempt lost its connection after one chunk
        assert same_bytes(smb_env.share_dir / "again.vhdx", source)
    finally:
        await smb.close()


async def test_a_copy_interrupted_at_every_attempt_fails_retryably_and_the_partial_file_can_be_removed(
        smb_env: SambaPeer, tmp_path: Path) -> None:
    source = disk(tmp_path / "d.vhdx", 64)
    smb = copier(smb_env)
    unc = f"{smb_env.unc}\\cut.vhdx"
    before = set(smb_env.connections())
    real, attempts = smb._copy_sync, []

    def counted(*args: Any) -> int:
        attempts.append(1)
        return real(*args)

    smb._copy_sync = counted  # type: ignore[method-assign]

    async def cut(done: int, total: int) -> None:
        if done >= 4 * CHUNK:  # the server side of this connection dies mid-copy
            for pid in set(smb_env.connections()) - before:
                with contextlib.suppress(ProcessLookupError):  # killed at an earlier chunk
                    os.kill(pid, signal.SIGKILL)

    try:
        with pytest.raises(RetryableError, match="SMB connection was lost"):
            await smb.copy(source, unc, cut)
        assert len(attempts) == QUICK.attempts  # each attempt started again
        assert "cut.vhdx" in smb_env.files()
        assert await smb.remove(unc) is True  # a new connection
        assert smb_env.files() == []
    finally:
        await smb.close()


async def test_a_cancelled_copy_stops_and_closes_the_file(smb_env: SambaPeer, tmp_path: Path) -> None:
    source = disk(tmp_path / "d.vhdx", 64)
    smb = copier(smb_env)
    unc = f"{smb_env.unc}\\cancel.vhdx"
    seen: list[int] = []

    async def progress(done: int, total: int) -> None:
        seen.append(done)
        if done >= 2 * CHUNK:
            job.cancel()

    job = asyncio.ensure_future(smb.copy(source, unc, progress))
    try:
        with pytest.raises(asyncio.CancelledError):
            await job
        size = (smb_env.share_dir / "cancel.vhdx").stat().st_size
        assert size < source.stat().st_size  # it stopped
        assert await smb.remove(unc) is True and smb_env.files() == []
    finally:
        await smb.close()


async def test_a_wrong_password_is_an_auth_error_without_the_password(
        smb_env: SambaPeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SMB_PASSWORD_ENV, "Wrong-secret-42")
    smb = copier(smb_env)
    try:
        with pytest.raises(AuthError) as caught:
            await smb.copy(disk(tmp_path / "d.vhdx", 1), f"{smb_env.unc}\\x.vhdx", _ignore)
        assert "Wrong-secret-42" not in str(caught.value)
        assert smb_env.files() == []
    finally:
        await smb.close()


async def _ignore(done: int, total: int) -> None:
    pass


@pytest.mark.parametrize("error", [
    OSError(errno.EBADF, "Bad file descriptor"),    # the socket closed under the copy's send
    OSError(errno.ENOTCONN, "Transport endpoint is not connected"),
    ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
])
def test_a_socket_lost_mid_copy_is_retryable(error: OSError) -> None:
    """smbprotocol's receiver closes the socket when the server goes away; the next send of the
    copy then fails with EBADF (seen once in a loop of the interrupted-copy test)."""
    assert isinstance(translate(error, "copying disk.vhdx"), RetryableError)


def test_other_os_errors_are_not_retried() -> None:
    assert not isinstance(translate(OSError(errno.EINVAL, "Invalid argument"), "copying"), RetryableError)


def test_a_connection_refused_or_reset_while_connecting_is_retryable() -> None:
    """smbprotocol's connect raises a ValueError whose cause is the socket's error."""
    for cause in (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
                  ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")):
        try:
            try:
                raise cause
            except OSError as err:
                raise ValueError(f"Failed to connect to '127.0.0.1:445': {err}") from err
        except ValueError as exc:
            error = translate(exc, "copying disk.vhdx")
        assert isinstance(error, RetryableError), error
        assert "Error" not in str(error)


async def test_a_copy_the_server_stops_answering_fails_in_the_share_timeout(
        smb_env: SambaPeer, tmp_path: Path) -> None:
    """smbprotocol waits for an answer without a time limit: a connection that goes silent
    mid-copy (here held 5 s by the relay) ends after the share's timeout (1 s), retryably."""
    from tests.faults.tcp_proxy import TcpFault, TcpFaultProxy, TcpSchedule

    source = disk(tmp_path / "d.vhdx", 8)
    stall = TcpSchedule(seed=1, rate=1.0, menu=(TcpFault.STALL,), cut_range=(2 * CHUNK, 2 * CHUNK))
    async with TcpFaultProxy(smb_env.port, stall, stall_seconds=5.0) as relay:
        share = SmbShare("127.0.0.1", SMB_USER_ENV, SMB_PASSWORD_ENV, relay.port, "ntlm", True, 1)
        smb = SmbCopier(share, CHUNK, RetryPolicy(attempts=1))
        started = time.monotonic()
        try:
            with pytest.raises(PlatformTimeoutError, match="did not answer in 1 s") as caught:
                await smb.copy(source, f"{smb_env.unc}\\stalled.vhdx", _ignore)
            assert time.monotonic() - started < 4.5  # before the relay's stall ended
            assert caught.value.retryable
        finally:
            await smb.close()
    smb = copier(smb_env)
    try:
        assert await smb.remove(f"{smb_env.unc}\\stalled.vhdx") is True
    finally:
        await smb.close()


def test_a_file_still_open_by_a_lost_connection_is_retryable() -> None:
    """Samba (and Windows) keep a lost connection's handle until they notice the loss: the
    copy's next attempt gets a sharing violation for a while."""
    from smbprotocol.exceptions import SMBOSError
    from smbprotocol.header import NtStatus

    error = translate(SMBOSError(NtStatus.STATUS_SHARING_VIOLATION, "\\\\hv01\\layerbot\\d.vhdx"),
                      "copying d.vhdx")
    assert isinstance(error, RetryableError) and "still open" in str(error)
