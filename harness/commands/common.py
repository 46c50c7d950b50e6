"""What every command shares: finding the repository, turning errors into one-line messages,
choosing the live or plain view."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sys
import traceback
from pathlib import Path

import click

from harness.errors import HarnessError

repo_option = click.option("--repo", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
                           envvar="HARNESS_REPO", show_default=True, help="The research repository.")


def handle_errors(fn):
    """Show a HarnessError as `error: ...` plus its hint, exit with its code; a traceback only
    with HARNESS_DEBUG=1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HarnessError as e:
            if os.environ.get("HARNESS_DEBUG"):
                traceback.print_exc()
            click.echo(f"error: {e}", err=True)
            if e.hint:
                click.echo(f"  -> {e.hint}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT):
                raise
            click.echo(f"error: cannot write {e.filename or ''}: {e.strerror}", err=True)
            click.echo("  -> free disk space or fix the folder's permissions, then run the command again", err=True)
            sys.exit(3)

    return wrapper


@contextlib.contextmanager
def view(quiet: bool):
    """The live panel (or plain lines) for the length of a command; the terminal is restored
    whatever happens."""
    from harness.live import make_reporter

    reporter = make_reporter(quiet=quiet, stream=sys.stdout)
    try:
        yield reporter
    finally:
        getattr(reporter, "close", lambda: None)()
