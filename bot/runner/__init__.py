"""Working tasks: :mod:`bot.runner.planning` turns a template into a plan and queued tasks,
:mod:`bot.runner.job_runner` claims and leases them, :mod:`bot.runner.task_steps` runs one
task's steps (compose, upload through the adapter, watch) with their cleanup."""
