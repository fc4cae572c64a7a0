"""The command line: thin commands over the library.

Every expected error is an `AmbientError`: printed as one `error:` line (and a `hint:`
line) on stderr with its exit code. Anything else is a bug: one line, exit 5, and
`--debug` shows the traceback. Results go to stdout, everything else to stderr.
"""

from __future__ import annotations

import sys

import click

from ambientctl import __version__
from ambientctl.errors import AmbientError, ExitCode
from ambientctl.render.terminal import terminal_safe


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ambientctl")
@click.option("--debug", is_flag=True, help="Show tracebacks for internal errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Explain how traffic flows through an Istio ambient mesh, hop by hop."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _register() -> None:
    # Each command lives in its own module; importing registers it on `cli`.
    from ambientctl.cli import commands  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and map errors to exit codes."""
    _register()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        rv = cli.main(args=argv, prog_name="ambientctl", standalone_mode=False)
    except AmbientError as exc:
        click.echo(terminal_safe(f"error: {exc.message}"), err=True)
        if exc.hint:
            click.echo(terminal_safe(f"hint: {exc.hint}"), err=True)
        return int(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        return int(ExitCode.INTERRUPTED)
    except click.ClickException as exc:
        exc.message = terminal_safe(exc.message)
        exc.show()
        return int(exc.exit_code)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:  # a bug: one line, traceback only on request
        if debug:
            raise
        click.echo(
            terminal_safe(
                f"internal error: {type(exc).__name__}: {exc} (re-run with --debug for a "
                "traceback)"
            ),
            err=True,
        )
        return int(ExitCode.INTERNAL)
    # Commands return their exit code (standalone_mode=False hands it back here).
    return int(rv) if isinstance(rv, int) else int(ExitCode.OK)
