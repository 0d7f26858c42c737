"""The slack-bolt AsyncApp: listeners only acknowledge and hand the work to
:class:`bot.slack.handlers.Handlers` in an owned background task, so every command,
click and submission is answered well inside Slack's 3 seconds."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import messages
from bot.slack import blocks as sb
from bot.slack.handlers import Background, Handlers
from bot.slack.response_urls import Respond, ResponseUrls

log = logging.getLogger("bot.slack")


class _SkipTokenWarning(logging.Filter):
    """bolt warns that SLACK_BOT_TOKEN from the environment is unused when a client is
    given; the client carries that very token (and its SLACK_API_URL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


log.addFilter(_SkipTokenWarning())


def build_app(handlers: Handlers, background: Background, *, client: AsyncWebClient,
              signing_secret: str, responses: ResponseUrls, command: str = "/publish") -> AsyncApp:
    # HttpEdge (bot/slack/edge.py) verified the signature on the raw bytes before bolt sees the
    # request; bolt's own check would hash and parse every body a second time
    app = AsyncApp(client=client, signing_secret=signing_secret, name="layerbot", logger=log,
                   request_verification_enabled=False)

    app.command(command)(_acked_button(background, handlers, responses, handlers.command, "command"))

    # both steps keep the modal open (an empty ack would close it) and show a notice that the
    # handler replaces with views.update once it has the answer
    @app.view(sb.VIEW_PUBLISH)
    async def publish_modal(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack(response_action="update", view=sb.modal_notice(messages.MODAL_PREPARING))
        background.spawn(handlers.modal_submitted(body), "modal")

    @app.view(sb.VIEW_CONFIRM)
    async def confirm_modal(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack(response_action="update", view=sb.modal_notice(messages.MODAL_STARTING))
        background.spawn(handlers.modal_confirmed(body), "modal-confirm")

    @app.view(sb.VIEW_APPROVAL_CHANNEL)
    async def approval_channel_modal(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        background.spawn(handlers.approval_channel_submitted(body), "approval-channel")

    buttons = {
        sb.ACTION_CONFIRM: (handlers.confirm, "confirm"),
        sb.ACTION_DISMISS: (handlers.dismiss, "dismiss"),
        sb.ACTION_REJECT: (handlers.reject, "reject"),
        sb.ACTION_TASK_CANCEL: (handlers.task_cancel, "task-cancel"),
        sb.ACTION_TASK_RETRY: (handlers.task_retry, "task-retry"),
    }
    for action_id, (handler, name) in buttons.items():
        app.action(action_id)(_acked_button(background, handlers, responses, handler, name))

    @app.action(sb.ACTION_HOME_PUBLISH)
    async def home_publish(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        background.spawn(handlers.home_publish(body), "home-publish")

    async def home_tasks(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        background.spawn(handlers.home_tasks(body), "home-tasks")

    for view_name in ("mine", "all"):
        app.action(f"{sb.ACTION_HOME_TASKS}_{view_name}")(home_tasks)

    @app.action(sb.ACTION_OPEN_LINK)
    async def open_link(ack: AsyncAck) -> None:
        await ack()  # a link button: Slack opens the URL, nothing to do

    @app.event("app_home_opened")
    async def home_opened(ack: AsyncAck, event: dict[str, Any]) -> None:
        await ack()
        background.spawn(handlers.home_opened(event), "home")

    return app


ButtonHandler = Callable[[dict[str, Any], Respond], Coroutine[Any, Any, None]]


def _acked_button(background: Background, handlers: Handlers, responses: ResponseUrls,
                  handler: ButtonHandler, name: str) -> Any:
    """A listener that acks, then leaves the work to ``handler`` in the background. Commands,
    and these buttons that sit in messages, always carry a response_url to answer on."""

    async def listener(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        url = body.get("response_url")
        if not isinstance(url, str):
            background.spawn(handlers.refuse_request(body, f"{name} without a response_url"), name)
            return
        background.spawn(handler(body, responses.respond(url)), name)

    return listener
