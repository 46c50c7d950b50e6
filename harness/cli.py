"""The `harness` command line. Parsing and printing only: the work is done in the modules."""

from __future__ import annotations

import importlib
import signal
import sys
import threading

import click

from harness import __version__

_COMMAND_MODULES = (
    "harness.commands.core",
    "harness.commands.llmlog",
    "harness.commands.view",
)


_NoArgsIsHelp = getattr(click.exceptions, "NoArgsIsHelpError", ())


class HarnessGroup(click.Group):
    """click, with bad options said like every other error: `error: ...` and what to do, no
    usage block. SIGTERM and SIGHUP (a closed terminal, `kill`, a scheduler ending the job) stop
    a command the way Ctrl-C does: the run is stopped and the state recorded cleanly."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        _stop_on_termination_signals()
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NoArgsIsHelp as e:  # bare `harness`: the help, as always
            click.echo(e.format_message(), err=True)
            sys.exit(e.exit_code)
        except click.UsageError as e:
            command = e.ctx.command_path if e.ctx else "harness"
            click.echo(f"error: {e.format_message()}", err=True)
            click.echo(f"  -> see `{command} --help`", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


def _stop_on_termination_signals() -> None:
    def interrupt(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, interrupt)


@click.group(cls=HarnessGroup)
@click.version_option(__version__, prog_name="harness")
def cli() -> None:
    """auto-log-research: git-native autonomous ML research."""


for _name in _COMMAND_MODULES:  # each module defines `commands`, the click commands it adds
    for _command in importlib.import_module(_name).commands:
        cli.add_command(_command)


def main() -> None:
    cli()
