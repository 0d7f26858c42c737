"""Counting layerbot's Slack Web API calls, and the 429s among them.

slack_sdk asks each of a client's retry handlers about every response (and every error)
before it returns or raises: the first handler of each layerbot client counts them, never
asks for a retry, and leaves the decision to the handlers after it.
"""

from __future__ import annotations

import re
from typing import Any

from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import async_default_handlers
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from bot import metrics

#: a Web API method name; anything else (a typo, an id in a path) would be a new label value
#: per URL, so it is counted as "other"
_METHOD = re.compile(r"^[a-z]+(\.[A-Za-z]+)+$")


def api_method(url: str) -> str:
    """``https://slack.com/api/chat.update?x=1`` -> ``chat.update``; not a method name -> ``other``."""
    name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return name if _METHOD.fullmatch(name) else "other"


class CountingHandler(AsyncRetryHandler):
    async def can_retry_async(self, *, state: RetryState, request: HttpRequest,
                              response: HttpResponse | None = None,
                              error: Exception | None = None) -> bool:
        status = str(response.status_code) if response is not None else "error"
        metrics.count_slack_call(api_method(request.url), status)
        return False


def counted_client(**kwargs: Any) -> AsyncWebClient:
    """An AsyncWebClient whose calls count in ``layerbot_slack_api_calls_total``."""
    handlers = kwargs.pop("retry_handlers", None)
    handlers = async_default_handlers() if handlers is None else list(handlers)
    return AsyncWebClient(retry_handlers=[CountingHandler(), *handlers], **kwargs)
