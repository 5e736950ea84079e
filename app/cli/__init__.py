"""The app's part of the `consulta` command line: thin commands that parse, call the app, and print.

`make_cli` builds the Typer group: the top-level commands (commands.py) and the docs, models, users and reranker
groups; layers above the app add their own groups to it (the `consulta` entry point, consulta/cli.py, adds `eval`),
so that app/ never imports them. `run` maps the errors a user can cause to one line on stderr and exit status 1,
never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer
from pydantic import ValidationError

from app.cli.commands import COMMANDS
from app.cli.common import USER_ERRORS, CliState, err
from app.cli.docs import docs_cli
from app.cli.models import models_cli
from app.cli.reranker import reranker_cli
from app.cli.users import users_cli

__all__ = ["cli", "main", "make_cli", "run"]


def main_options(
    config: Annotated[str | None, typer.Option("--config", "-c", help="YAML settings file",
                                               envvar="CONSULTA_CONFIG")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details")] = False,
) -> None:
    CliState.config = config
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if not verbose:  # libraries' own chatter (bm25s sets DEBUG on its logger; llama.cpp's load warnings)
        for name in ("bm25s", "serving.engine.llama_cpp"):
            logging.getLogger(name).setLevel(logging.ERROR)


def make_cli(*groups: tuple[str, typer.Typer]) -> typer.Typer:
    """The `consulta` group with the app's commands, plus `groups` as (name, Typer) from the layers above."""
    group = typer.Typer(name="consulta", help="Consulta: ask your organisation's documents, locally and privately.",
                        no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
    group.callback()(main_options)
    for command in COMMANDS:
        group.command()(command)
    for name, sub in (("docs", docs_cli), ("models", models_cli), ("users", users_cli), ("reranker", reranker_cli),
                      *groups):
        group.add_typer(sub, name=name)
    return group


cli = make_cli()  # the app's commands alone (`python -m app.cli`, CliRunner tests)


def run(group: typer.Typer) -> None:
    """Run a `consulta` group on sys.argv and exit with its status; user errors print one line, status 1."""
    # Models come from installed packages and local folders, never from a hub: set before anything imports
    # huggingface_hub, which reads these once; a value already in the environment wins.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        code = group(standalone_mode=False)  # click returns typer.Exit's code instead of raising it here
        if isinstance(code, int) and code:
            sys.exit(code)
    except USER_ERRORS as e:
        err.print(f"[red]error:[/red] {e}", markup=True, soft_wrap=True)
        sys.exit(1)
    except ValidationError as e:
        first = e.errors()[0]
        err.print(f"error: invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}")
        sys.exit(1)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


def main() -> None:
    """The app's commands alone; the `consulta` script runs consulta.cli:main, which adds `eval`."""
    run(cli)
