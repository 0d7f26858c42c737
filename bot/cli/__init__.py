"""The ``layerbot`` command line: :mod:`bot.cli.commands` (the click group and its commands)
and :mod:`bot.cli.output` (console, escaping, exit codes). Platform commands (``layerbot vm``)
live with their adapter and are loaded lazily by the group."""
