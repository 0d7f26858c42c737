"""The compute client's retry of GET requests: a long-running operation's status polls (and
reads) retried in place, honouring Retry-After, without re-issuing the PUT, POST or DELETE
that started it. Every other method goes out once: :meth:`adapters.azure.arm.Arm.call`
retries those (ARM's PUTs and deletes are safe to repeat)."""

from __future__ import annotations

from typing import Any

from adapters.base import RetryableError, error_words
from adapters.retry import RetryPolicy, retry_after, retrying

#: statuses worth another GET: throttling, and ARM's transient failures
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class _Transient(RetryableError):
    def __init__(self, reason: str, response: Any = None, error: BaseException | None = None,
                 after: float | None = None) -> None:
        super().__init__(reason, retry_after=after)
        self.response = response
        self.error = error


class GetRetryPolicy:
    """An azure-core pipeline policy (``retry_policy=``): its ``next`` is set by the pipeline."""

    next: Any

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        #: GETs sent again (for tests and logs)
        self.retried = 0

    async def send(self, request: Any) -> Any:
        if request.http_request.method.upper() != "GET":
            return await self.next.send(request)
        from azure.core.exceptions import IncompleteReadError, ServiceRequestError, ServiceResponseError

        attempts = 0

        async def once() -> Any:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                self.retried += 1
            try:
                response = await self.next.send(request)
            except (ServiceRequestError, ServiceResponseError) as exc:
                raise _Transient(f"cannot reach Azure: {error_words(exc)}", error=exc) from exc
            except IncompleteReadError as exc:  # an answer cut short: a GET is safe to repeat
                raise _Transient("the answer was cut short", error=exc) from exc
            status = response.http_response.status_code
            if status in RETRY_STATUSES:
                after = retry_after(response.http_response.headers.get("Retry-After"))
                raise _Transient(f"HTTP {status}", response=response, after=after)
            return response

        try:
            return await retrying(once, "Azure: polling", self.policy, only=(_Transient,))
        except _Transient as last:  # the budget is spent: the SDK maps the answer or error
            if last.error is not None:
                raise last.error from None
            return last.response
