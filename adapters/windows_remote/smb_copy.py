"""Copy a disk to an SMB share with smbprotocol's ``smbclient`` (never base64 over WinRM).

The copy runs on one worker thread that writes the file in chunks and reports each; the
event loop turns the reports into progress. A cancel stops the thread before its next chunk
and waits for it to close the file (a file still open on the server cannot be deleted). Runs
of zeros are not sent: the writer seeks past them and the file's end is set at the close,
so the server reads zeros there (a fixed VHD is mostly zeros). The size on the share is
checked against the disk. Each copier has its own connection cache (its own SMB session);
the password is passed to smbprotocol only, never put in a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.base import (
    AdapterError,
    AuthError,
    InsufficientSpaceError,
    NotFoundError,
    PlatformError,
    PlatformTimeoutError,
    RetryableError,
    error_words,
    secret_from_env,
)
from adapters.retry import RetryPolicy, retrying

if TYPE_CHECKING:
    from adapters.windows_remote.winrm_settings import WindowsRemoteSettings

#: (bytes copied, bytes in all)
CopyProgress = Callable[[int, int], Awaitable[None]]

_SMB_AUTH = {"ntlm": "ntlm", "kerberos": "kerberos", "credssp": "negotiate"}
_DENIED = frozenset({"SMBAuthenticationError", "LogonFailure", "AccessDenied", "PasswordExpired",
                     "AccountRestriction"})
_MISSING = frozenset({"ObjectNameNotFound", "ObjectPathNotFound", "BadNetworkName"})
_FULL = frozenset({"DiskFull", "QuotaExceeded"})
_SHARING_VIOLATION = 0xC0000043
#: a copy whose connection was lost starts again (the file is opened for writing, replaced):
#: a dropped SMB session, a server restarting, a refused connection
COPY_RETRY = RetryPolicy(attempts=4, budget=900.0, first_delay=2.0, max_delay=30.0)


class CopyStopped(Exception):
    """The copy thread saw the stop flag (the task was cancelled)."""


@dataclass(frozen=True)
class SmbShare:
    """The server of a share and who logs in (the names of the variables, not their values)."""

    server: str
    user_env: str
    password_env: str
    port: int = 445
    #: negotiate, ntlm or kerberos
    auth: str = "ntlm"
    encrypt: bool = True
    timeout: float = 60.0

    @classmethod
    def of(cls, settings: WindowsRemoteSettings, timeout: float = 60.0) -> SmbShare:
        return cls(settings.smb_server, settings.user_env, settings.password_env, settings.smb_port,
                   _SMB_AUTH[settings.auth], settings.smb_encrypt, timeout)


def _missing(exc: BaseException) -> bool:
    # smbclient's SMBOSError is an OSError with errno ENOENT, not a FileNotFoundError
    return (isinstance(exc, FileNotFoundError) or type(exc).__name__ in _MISSING
            or getattr(exc, "errno", None) == errno.ENOENT)


def _connection_lost(exc: BaseException) -> bool:
    """The connection died (or could not be made): smbprotocol raises a ValueError("Failed to
    connect ...") whose cause is the socket's error, so the causes are looked through."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        # EBADF/ENOTCONN: smbprotocol's receiver closed the socket when the connection died,
        # and the copy's next send found it closed
        if type(seen).__name__ == "SMBConnectionClosed" or isinstance(seen, ConnectionError) or (
                type(seen) is OSError and seen.errno in (errno.EBADF, errno.ENOTCONN)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def translate(exc: BaseException, where: str) -> AdapterError:
    """The adapter error for an smbprotocol failure, keeping its status text."""
    if isinstance(exc, AdapterError):
        return exc
    name = type(exc).__name__
    if name in _DENIED:
        return AuthError(f"{where}: the SMB server refused the credentials or access ({error_words(exc)})")
    if _missing(exc):
        return NotFoundError(f"{where}: not found ({error_words(exc)})")
    if name in _FULL:
        return InsufficientSpaceError(f"{where}: the share is full ({error_words(exc)})")
    if isinstance(exc, TimeoutError):
        return PlatformTimeoutError(f"{where}: no answer in time")
    if name == "SharingViolation" or getattr(exc, "ntstatus", None) == _SHARING_VIOLATION:
        # a lost connection's handle stays open on the server until it notices the loss
        return RetryableError(f"{where}: the file is still open on the server (by a connection "
                              f"that was lost?): {error_words(exc)}")
    if _connection_lost(exc):
        return RetryableError(f"{where}: the SMB connection was lost ({error_words(exc)})")
    return PlatformError(f"{where} failed: {error_words(exc)}")


def _close(remote: Any, after_failure: bool) -> None:
    try:
        remote.close()
    except Exception:
        # the connection died: the server dropped the handle with it; smbclient still thinks
        # it open (a ResourceWarning when collected) unless told
        remote.fd._connected = False
        if not after_failure:
            raise


class SmbCopier:
    """Copies files to, sizes and removes files on one SMB server (blocking calls on threads)."""

    def __init__(self, share: SmbShare, chunk_size: int = 4 << 20, retry: RetryPolicy = COPY_RETRY) -> None:
        self.share = share
        self.chunk_size = chunk_size
        self.retry = retry
        self._cache: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _kwargs(self) -> dict[str, Any]:
        return {"port": self.share.port, "connection_cache": self._cache}

    def _connect(self) -> None:
        import smbclient

        with self._lock:
            smbclient.register_session(
                self.share.server, username=secret_from_env(self.share.user_env),
                password=secret_from_env(self.share.password_env), port=self.share.port,
                encrypt=self.share.encrypt, connection_timeout=int(self.share.timeout),
                auth_protocol=self.share.auth, connection_cache=self._cache)

    def _drop_connections(self) -> None:
        """After a failure: the next call connects again (a dead connection stays cached)."""
        import smbclient

        with self._lock, contextlib.suppress(Exception):
            smbclient.reset_connection_cache(connection_cache=self._cache)

    def _abort_connections(self) -> None:
        """Shut the sockets down under smbprotocol, which waits for an answer without a time
        limit: the copy's thread then fails. Not smbprotocol's own close: it waits for a send
        the silent server never lets finish."""
        for connection in list(self._cache.values()):
            sock = getattr(getattr(connection, "transport", None), "_sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _forget_connections(self) -> None:
        """After a stall: drop the connections without logging off (a logoff would wait for
        an answer on the dead connection, without a time limit)."""
        with self._lock:
            for name in list(self._cache):
                with contextlib.suppress(Exception):
                    self._cache.pop(name).disconnect(close=False)

    # ------------------------------------------------------------ blocking
    def _copy_sync(self, source: Path, unc: str, stop: threading.Event,
                   report: Callable[[int], None]) -> int:
        import smbclient

        self._connect()
        total = source.stat().st_size
        done = 0
        remote = smbclient.open_file(unc, mode="wb", buffering=0, share_access="r", **self._kwargs())
        copied = False
        try:
            with open(source, "rb") as local:
                while chunk := local.read(self.chunk_size):
                    if stop.is_set():
                        raise CopyStopped
                    view = memoryview(chunk)
                    if chunk.count(0) == len(chunk):
                        remote.seek(done + len(chunk))
                    else:
                        while view:
                            view = view[remote.write(view):]
                    done += len(chunk)
                    report(done)
            remote.truncate(total)  # the end of the file, after a last run of zeros
            copied = True
        finally:
            _close(remote, after_failure=not copied)
        size = smbclient.stat(unc, **self._kwargs()).st_size
        if size != total:
            raise PlatformError(f"{unc}: the copy on the share has {size} bytes, the disk {total}")
        return total

    def _size_sync(self, unc: str) -> int | None:
        import smbclient

        self._connect()
        try:
            return int(smbclient.stat(unc, **self._kwargs()).st_size)
        except Exception as exc:
            if _missing(exc):
                return None
            raise

    def _remove_sync(self, unc: str) -> bool:
        import smbclient

        self._connect()
        try:
            smbclient.remove(unc, **self._kwargs())
        except Exception as exc:
            if _missing(exc):
                return False
            raise
        return True

    async def _call(self, where: str, fn: Callable[..., Any], *args: Any) -> Any:
        async def once() -> Any:
            try:
                return await asyncio.to_thread(fn, *args)
            except Exception as exc:
                await asyncio.to_thread(self._drop_connections)
                raise translate(exc, where) from exc

        return await retrying(once, where, self.retry)

    # ------------------------------------------------------------ async API
    async def copy(self, source: Path, unc: str, progress: CopyProgress) -> int:
        """Copy ``source`` to ``unc`` (replacing it); the bytes copied, checked on the share.
        A copy whose connection was lost starts again from its first byte (``retry``)."""
        return await retrying(lambda: self._copy_once(source, unc, progress),
                              f"copying {source.name} to {unc}", self.retry)

    async def _copy_once(self, source: Path, unc: str, progress: CopyProgress) -> int:
        loop = asyncio.get_running_loop()
        total = source.stat().st_size
        stop = threading.Event()
        changed = asyncio.Event()
        latest = [0]

        def report(done: int) -> None:
            latest[0] = done
            loop.call_soon_threadsafe(changed.set)

        worker = asyncio.ensure_future(asyncio.to_thread(self._copy_sync, source, unc, stop, report))
        stalled = False
        try:
            while not worker.done():
                waiter = asyncio.ensure_future(changed.wait())
                try:
                    finished, _ = await asyncio.wait({worker, waiter}, timeout=self.share.timeout,
                                                     return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                if not finished:
                    stalled = True
                    self._abort_connections()
                if changed.is_set():
                    changed.clear()
                    await progress(latest[0], total)
            return int(worker.result())
        except BaseException as exc:
            stop.set()
            if not worker.done():  # let the thread close the file before anyone removes it
                finished, _ = await asyncio.wait({worker}, timeout=self.share.timeout)
                if not finished:  # stuck on a silent server
                    stalled = True
                    self._abort_connections()
                    await asyncio.wait({worker})
            if isinstance(exc, Exception):
                if stalled:
                    await asyncio.to_thread(self._forget_connections)
                    raise PlatformTimeoutError(
                        f"copying {source.name} to {unc}: the SMB server did not answer in "
                        f"{self.share.timeout:g} s") from exc
                await asyncio.to_thread(self._drop_connections)
                raise translate(exc, f"copying {source.name} to {unc}") from exc
            raise

    async def size(self, unc: str) -> int | None:
        """The file's size on the share, None when there is none."""
        return await self._call(f"reading {unc}", self._size_sync, unc)  # type: ignore[no-any-return]

    async def remove(self, unc: str) -> bool:
        """Delete the file; False when it was already gone."""
        return await self._call(f"deleting {unc}", self._remove_sync, unc)  # type: ignore[no-any-return]

    async def close(self) -> None:
        await asyncio.to_thread(self._drop_connections)
