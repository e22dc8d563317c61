"""CLI subcommands, one module each (see llamix.cli)."""
