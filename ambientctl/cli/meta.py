"""Commands about ambientctl itself: shell completion and the bundled examples."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from ambientctl.cli import cli
from ambientctl.errors import ExitCode, UsageError

SHELLS = ("bash", "zsh", "fish")


@cli.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion_cmd(ctx: click.Context, shell: str) -> int:
    """Print the shell completion script for SHELL.

    \b
    bash:  source <(ambientctl completion bash)     (or save it under
           /etc/bash_completion.d/ambientctl)
    zsh:   ambientctl completion zsh > "${fpath[1]}/_ambientctl"
    fish:  ambientctl completion fish > ~/.config/fish/completions/ambientctl.fish
    """
    from click.shell_completion import get_completion_class

    root = ctx.find_root()
    prog = root.info_name or "ambientctl"
    from ambientctl.cli import COMPLETE_VAR

    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - the Choice above lists only supported shells
        raise UsageError(f"no completion for {shell}")
    click.echo(cls(root.command, {}, prog, COMPLETE_VAR).source())
    return int(ExitCode.OK)


@cli.group("examples")
def examples_group() -> None:
    """The example bundles that ship with ambientctl (no cluster needed)."""


@examples_group.command("list")
def examples_list() -> int:
    """List the example bundles and where they are."""
    from ambientctl.resources import examples

    found = examples()
    if not found:
        raise UsageError("this installation has no example bundles",
                         hint="reinstall from a wheel or the source tree")
    for name, path in found.items():
        click.echo(f"{name}\t{path}")
    return int(ExitCode.OK)


@examples_group.command("extract")
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--name", "names", multiple=True, metavar="NAME",
              help="Only this example (repeatable) [default: all].")
def examples_extract(dest: str, names: tuple[str, ...]) -> int:
    """Copy the example bundles into DEST (one folder each), to replay them with --bundle."""
    from ambientctl.resources import examples

    found = examples()
    unknown = sorted(set(names) - set(found))
    if unknown:
        raise UsageError(f"no example named {', '.join(unknown)}",
                         hint="see them: ambientctl examples list")
    out = Path(dest)
    for name in names or tuple(found):
        target = out / name
        if target.exists():
            raise UsageError(f"{target} exists; not overwriting it", hint="choose another DEST")
        shutil.copytree(found[name], target)
        click.echo(f"{target}")
    return int(ExitCode.OK)
