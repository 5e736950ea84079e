"""`python -m app.cli`: the app's commands alone (`python -m consulta` is the whole `consulta`, eval included)."""

from app.cli import main

main()
