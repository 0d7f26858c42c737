"""The Compute Engine clients of one project and credentials, shared by every adapter and
task that use them (:class:`adapters.blocking.SessionPool`), their calls on worker threads.

google-cloud-compute is synchronous (REST over ``requests``): each call runs on a thread
through :class:`adapters.blocking.Session`. google-auth refreshes access tokens itself, so
a session never "expires"; "logout" closes the clients' HTTP connections.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from adapters.base import AdapterError, AuthError, secret_from_env
from adapters.blocking import Session, SessionKey, SessionPool
from adapters.gcp.compute_faults import translate

if TYPE_CHECKING:
    from adapters.gcp.gcp_config import Config

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]

#: Makes the credentials for a connector (tests: a fixed token the double checks).
CredentialsFactory = Callable[["Config"], Any]


def default_credentials(config: Config) -> Any:
    """The service-account key file named by ``credentials_file_env``, else application
    default credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's, the metadata server)."""
    import google.auth
    from google.oauth2 import service_account

    if config.credentials_file_env:
        path = secret_from_env(config.credentials_file_env)
        if not os.path.isfile(path):
            raise AuthError(f"the service-account key file named by {config.credentials_file_env} "
                            "does not exist")
        try:
            return service_account.Credentials.from_service_account_file(path, scopes=SCOPES)
        except (ValueError, KeyError):  # not a key file; its text is never shown
            raise AuthError(f"the file named by {config.credentials_file_env} is not a "
                            "service-account key") from None
    credentials, _ = google.auth.default(scopes=SCOPES)
    return credentials


@dataclass
class ComputeClients:
    images: Any
    instances: Any
    disks: Any
    global_operations: Any
    zone_operations: Any

    def close(self) -> None:
        for client in (self.images, self.instances, self.disks, self.global_operations,
                       self.zone_operations):
            client.transport.close()


class ComputeSession(Session[ComputeClients]):
    def __init__(self, endpoint: str | None, config: Config, credentials: CredentialsFactory) -> None:
        super().__init__(endpoint or "compute.googleapis.com")
        self.api_endpoint = endpoint
        self.config = config
        self.credentials = credentials

    def login(self) -> ComputeClients:
        from google.cloud import compute_v1

        try:
            creds = self.credentials(self.config)
        except AdapterError:
            raise
        except Exception as exc:
            raise translate(exc, "reading the credentials") from exc
        options = {"api_endpoint": self.api_endpoint} if self.api_endpoint else None

        def make(cls: Any) -> Any:
            return cls(credentials=creds, transport="rest", client_options=options)

        return ComputeClients(
            images=make(compute_v1.ImagesClient), instances=make(compute_v1.InstancesClient),
            disks=make(compute_v1.DisksClient),
            global_operations=make(compute_v1.GlobalOperationsClient),
            zone_operations=make(compute_v1.ZoneOperationsClient))

    def login_again(self, client: ComputeClients) -> ComputeClients:
        return client

    def expired(self, exc: BaseException) -> bool:
        return False

    def logout(self, client: ComputeClients) -> None:
        with contextlib.suppress(Exception):  # closing sockets must not fail a cleanup
            client.close()

    def error(self, exc: Exception, doing: str) -> AdapterError:
        return translate(exc, doing)


SESSIONS: SessionPool[ComputeSession] = SessionPool()


@dataclass(frozen=True)
class Clients:
    """How the adapter reaches Google Cloud; injected (``adapters.create(config, clients=...)``)
    by tests that talk to the local Compute double and the storage emulator."""

    #: None: the key file of ``credentials_file_env``, else application default credentials
    credentials: CredentialsFactory | None = None
    #: first and longest pause between polls of a long-running operation (seconds)
    operation_poll: tuple[float, float] = (1.0, 10.0)
    #: first and longest pause between listings of a zone's instances while tasks wait
    watch_poll: tuple[float, float] = (5.0, 60.0)
    #: how long a takeover or a cleanup waits for a PENDING image to be READY or FAILED
    pending_image_bound: float = 1800.0
    sessions: SessionPool[ComputeSession] = field(default=SESSIONS)
    #: more settings of adapters.gcp.storage.StorageAccess (chunk_size, timeout, retry)
    storage_options: dict[str, Any] = field(default_factory=dict)

    def credentials_for(self, config: Config) -> Any:
        return (self.credentials or default_credentials)(config)


def session_key(config: Config, clients: Clients) -> SessionKey:
    """One session per endpoint, project and credentials (the key file's path, or ADC)."""
    who = (os.environ.get(config.credentials_file_env, "") if config.credentials_file_env
           else "application-default")
    return SessionKey.of(config.compute_endpoint or "compute.googleapis.com", config.project, who,
                         clients.credentials)
