"""The `consulta` script (pyproject's [project.scripts]): the app's command group with eval's group added."""

from __future__ import annotations

from app.cli import make_cli, run
from eval.cli import eval_cli

cli = make_cli(("eval", eval_cli))


def main() -> None:
    run(cli)


if __name__ == "__main__":
    main()
