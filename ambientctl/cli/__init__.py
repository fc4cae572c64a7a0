"""The command line: thin commands over the library.

Every expected error is an `AmbientError`: printed as one `error:` line (and a `hint:`
line) on stderr with its exit code. Anything else is a bug: one line, exit 5, and
`--debug` shows the traceback. Results go to stdout, everything else to stderr.
"""

from __future__ import annotations

import platform
import sys

import click

from ambientctl import __version__
from ambientctl.errors import AmbientError, ExitCode
from ambientctl.render.terminal import terminal_safe


COMPLETE_VAR = "_AMBIENTCTL_COMPLETE"
LIVE_CLIENTS = ("kubernetes", "docker", "paramiko")
DEPENDENCIES = {"core": ("click", "PyYAML"), "live": LIVE_CLIENTS}


def version_text() -> str:
    """`--version`: ambientctl, Python, platform and the optional clients installed (read
    from package metadata: nothing heavy is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    lines = [f"ambientctl {__version__}",
             f"python {platform.python_version()} ({sys.executable})",
             f"platform {platform.platform()}"]
    for extra, dists in DEPENDENCIES.items():
        found = []
        for dist in dists:
            try:
                found.append(f"{dist} {version(dist)}")
            except PackageNotFoundError:
                found.append(f"{dist} missing")
        lines.append(f"{extra if extra == 'core' else f'extra [{extra}]'}: {', '.join(found)}")
    return "\n".join(lines)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(version_text())
        ctx.exit(0)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Show the version, Python, platform and extras.")
@click.option("--debug", is_flag=True, help="Show tracebacks for internal errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Explain how traffic flows through an Istio ambient mesh, hop by hop."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _register() -> None:
    # Each command lives in its own module; importing registers it on `cli`.
    from ambientctl.cli import commands  # noqa: F401


def kubectl_main() -> int:
    """`kubectl-ambient`: the same CLI as a kubectl plugin (`kubectl ambient trace ...`)."""
    return main(prog_name="kubectl ambient")


def main(argv: list[str] | None = None, prog_name: str = "ambientctl") -> int:
    """Entry point: run the CLI and map errors to exit codes."""
    _register()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        rv = cli.main(args=argv, prog_name=prog_name, standalone_mode=False,
                      complete_var=COMPLETE_VAR)
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
        if isinstance(exc, ModuleNotFoundError) and exc.name in LIVE_CLIENTS and not debug:
            click.echo(f"error: live collection needs the Python package {exc.name}, which is "
                       "not installed", err=True)
            click.echo("hint: pip install 'ambientctl[live]'", err=True)
            return int(ExitCode.COLLECTION)
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
