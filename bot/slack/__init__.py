"""The Slack edge of ``layerbot serve``: request checks before bolt (:mod:`~bot.slack.edge`,
:mod:`~bot.slack.payloads`), the bolt app and its handlers, access and approvals, the blocks
it shows, and the notifier that turns task events into messages."""
