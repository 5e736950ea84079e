"""`python -m consulta`: the same as the `consulta` script."""

from consulta.cli import main

main()
