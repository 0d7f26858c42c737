"""error_words: an exception as words a user can act on, never its Python class name."""

from __future__ import annotations

import errno
import http.client
import socket
import ssl

import pytest

from adapters.base import PlatformError, error_for_waiter, error_words, untrusted_certificate
from adapters.xenserver.xapi_session import translate


def _chained(outer: Exception, inner: BaseException) -> Exception:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except Exception as caught:
        return caught


class SdkError(Exception):
    """An SDK's own exception class (its name must never reach a user)."""


@pytest.mark.parametrize(("exc", "words"), [
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "connection refused"),
    (OSError(errno.ECONNREFUSED, "Connect call failed"), "connection refused"),
    (TimeoutError(), "timed out"),
    (TimeoutError("read"), "timed out"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/srv/disk.vhd"),
     "No such file or directory: /srv/disk.vhd"),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "Name or service not known"),
    (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
     "the TLS handshake failed ([SSL: WRONG_VERSION_NUMBER] wrong version number)"),
    (SdkError("the quota is exceeded"), "the quota is exceeded"),
    (SdkError(), "an unexpected error"),
    (ValueError(""), "an unexpected error"),
    (KeyError("State"), "'State' is missing"),
])
def test_words_without_class_name(exc: BaseException, words: str) -> None:
    assert error_words(exc) == words
    assert type(exc).__name__ not in error_words(exc)


def test_names_what_it_concerns() -> None:
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert error_words(refused, "xen01.lab.example:443") == "xen01.lab.example:443: connection refused"


def test_a_wrapper_reads_as_its_cause() -> None:
    wrapper = SdkError("<urllib3.connection.HTTPSConnection object at 0x7f>: Failed to establish")
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert error_words(_chained(wrapper, refused)) == "connection refused"
    assert error_words(_chained(SdkError(), SdkError("the disk is locked"))) == "the disk is locked"


def test_unquoted_text_is_never_shown() -> None:
    leaky = SdkError("PUT https://xen01/import_raw_vdi?session_id=OpaqueRef:SECRET failed")
    assert error_words(leaky, quote=False) == "an unexpected error"
    assert error_words(_chained(leaky, TimeoutError()), quote=False) == "timed out"


def test_a_real_tls_failure() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    peer.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 4)  # not a TLS server
    try:
        with pytest.raises(ssl.SSLError) as raised:
            ssl.create_default_context().wrap_socket(client, server_hostname="localhost")
        assert error_words(raised.value).startswith("the TLS handshake failed (")
        assert "SSLError" not in error_words(raised.value)
    finally:
        for s in (client, peer, server):
            s.close()


def test_a_waiter_reads_the_failure_without_a_class_name() -> None:
    assert str(error_for_waiter(KeyError("State"), "watching the VMs")) == \
        "watching the VMs failed: 'State' is missing"


def test_xenserver_connection_failure_reason_has_no_class_name() -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: the connection is refused
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    with pytest.raises(OSError) as raised:
        conn.request("POST", "/", b"")
    error = translate(raised.value, f"XenServer http://127.0.0.1:{port}: logging in")
    assert str(error) == (f"XenServer http://127.0.0.1:{port}: logging in: connection failed: "
                          "connection refused")
    assert not isinstance(error, PlatformError) and error.retryable


def _aiohttp_certificate_error() -> Exception:
    """What aiohttp raises when the server's certificate fails the check: its own wrapper (an
    SSLCertVerificationError too, without OpenSSL's words) raised from the check's error."""
    import aiohttp
    from aiohttp.client_reqrep import ConnectionKey

    check = ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local "
           "issuer certificate (_ssl.c:1006)")
    check.verify_message = "unable to get local issuer certificate"
    key = ConnectionKey("127.0.0.1", 9440, True, True, None, None, None, None)
    return _chained(aiohttp.ClientConnectorCertificateError(key, check), check)


def test_aiohttp_certificate_wrapper_reads_as_openssl_words() -> None:
    wrapped = _aiohttp_certificate_error()
    assert error_words(wrapped) == ("the TLS handshake failed (the certificate could not be "
                                    "verified: unable to get local issuer certificate)")
    assert untrusted_certificate(wrapped) == "unable to get local issuer certificate"
    assert untrusted_certificate(ConnectionRefusedError(errno.ECONNREFUSED, "refused")) is None
