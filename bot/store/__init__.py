"""The task store: the SQLite database every runner shares (:mod:`~bot.store.task_store`),
its schema as ordered migrations, task states and event kinds, and following events."""
