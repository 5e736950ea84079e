"""The `consulta` program: its entry point, which puts together the command groups of every layer.

It sits above app/ and eval/, so that app/ never imports eval/ (the dependencies point one way, STYLE.md).
"""
