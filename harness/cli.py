"""The `harness` command line. Parsing and printing only: the work is done in the modules."""

from __future__ import annotations

import importlib

import click

from harness import __version__

# Each module defines `commands`: a list of click commands to register on the group.
_COMMAND_MODULES = (
    "harness.commands.core",
    "harness.commands.llmlog",
    "harness.commands.view",
)


@click.group()
@click.version_option(__version__, prog_name="harness")
def cli() -> None:
    """auto-log-research: git-native autonomous ML research."""


def _register() -> None:
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue  # TODO(integration): all modules exist at release; remove this guard
        for command in module.commands:
            cli.add_command(command)


_register()


def main() -> None:
    cli()
