"""Showing untrusted text (model output, file names, passages) safely in Streamlit Markdown."""

from __future__ import annotations

import re

_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|~$])")


def plain(text: str) -> str:
    """Show a name literally: `my_file_v2.pdf` must not turn italic, `a|b` must not split a table cell."""
    return _SPECIAL.sub(r"\\\1", text).replace("\n", " ")


def no_math(text: str) -> str:
    """Keep Markdown formatting but stop `$` from starting LaTeX (prices, shell variables)."""
    return text.replace("$", "\\$")
