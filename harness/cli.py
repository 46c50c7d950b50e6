"""The `harness` command line. Parsing and printing only: the work is done in the modules."""

from __future__ import annotations

import click

from harness import __version__


@click.group()
@click.version_option(__version__, prog_name="harness")
def cli() -> None:
    """auto-log-research: git-native autonomous ML research."""


def main() -> None:
    cli()
