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
@click.option("--debug", is_flag=True,
              help="Show tracebacks for internal errors (accepted anywhere on the line).")
@click.option("--max-member-size", metavar="SIZE", default=None,
              help="Largest file a bundle may hold (default 512M; env "
                   "AMBIENTCTL_MAX_MEMBER_SIZE). See docs/limits-and-safety.md.")
@click.option("--max-bundle-size", metavar="SIZE", default=None,
              help="Most uncompressed bytes a bundle may hold (default 4G; env "
                   "AMBIENTCTL_MAX_BUNDLE_SIZE).")
@click.pass_context
def cli(ctx: click.Context, debug: bool, max_member_size: str | None,
        max_bundle_size: str | None) -> None:
    """Explain how traffic flows through an Istio ambient mesh, hop by hop."""
    import os

    from ambientctl.bundle.limits import ENV_BUNDLE, ENV_MEMBER, parse_size

    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    # The reader takes its caps from the environment: one place, also for subprocesses.
    for value, env, flag in ((max_member_size, ENV_MEMBER, "--max-member-size"),
                             (max_bundle_size, ENV_BUNDLE, "--max-bundle-size")):
        if value is not None:
            os.environ[env] = str(parse_size(value, flag))


def _register() -> None:
    # Each command lives in its own module; importing registers it on `cli`.
    from ambientctl.cli import commands  # noqa: F401


def kubectl_main() -> int:
    """`kubectl-ambient`: the same CLI as a kubectl plugin (`kubectl ambient trace ...`)."""
    return main(prog_name="kubectl ambient")


def main(argv: list[str] | None = None, prog_name: str = "ambientctl") -> int:
    """Entry point: run the CLI and map errors to exit codes."""
    _register()
    args = list(argv if argv is not None else sys.argv[1:])
    # `--debug` is a group option, but the hint below tells users to "re-run with --debug"
    # and they append it to the command they ran: accept it anywhere (before a `--`).
    end = args.index("--") if "--" in args else len(args)
    debug = "--debug" in args[:end]
    if debug:
        args = ["--debug", *(a for a in args[:end] if a != "--debug"), *args[end:]]
    argv = args
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
                f"internal error: {type(exc).__name__}: {exc} (re-run with --debug anywhere "
                "on the command line for a traceback)"
            ),
            err=True,
        )
        return int(ExitCode.INTERNAL)
    # Commands return their exit code (standalone_mode=False hands it back here).
    return int(rv) if isinstance(rv, int) else int(ExitCode.OK)
