"""What every `consulta` command shares: the stderr console, the settings and services of this run, JSON output,
and the errors a user can cause (printed as one line, exit status 1)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from app.errors import ConsultaError
from app.settings import ConfigFileError, Settings, load_settings
from ingest.errors import IngestError
from retrieval.errors import RetrievalError
from serving.generator import ServingError

if TYPE_CHECKING:  # the container pulls in every stage: commands build it only when they run
    from app.container import Services

err = Console(stderr=True, highlight=False)

USER_ERRORS = (ConsultaError, IngestError, RetrievalError, ServingError, ConfigFileError)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]


class CliState:
    """Options of the `consulta` group itself, set by its callback before a command runs."""

    config: str | None = None


def load_cli_settings() -> Settings:
    """The settings of this run (--config / CONSULTA_CONFIG, the environment); a bad value is a user error."""
    try:
        return load_settings(CliState.config)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigFileError(f"invalid setting {loc}: {first['msg']} (check CONSULTA_* variables and the "
                              "settings file)") from e


def build_services(settings: Settings | None = None) -> Services:
    """The composition root for this run (components are built when a command first uses them)."""
    from app.container import Services

    return Services(settings or load_cli_settings())


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")
