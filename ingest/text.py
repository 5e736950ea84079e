"""Text helpers the loaders share: decoding a text file's bytes, and rows of cells as a Markdown table."""

from __future__ import annotations

from collections.abc import Sequence


def decode_text(raw: bytes) -> tuple[str, str]:
    """Bytes of a text file -> (text, encoding): UTF-8 (with or without BOM), else charset-normalizer's guess."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    # Our documents are English, Spanish and Catalan: Western encodings first (unrestricted, the detector can
    # read short Catalan in cp1252 as Vietnamese cp1258), then anything charset-normalizer recognises.
    for isolation in (_WESTERN_ENCODINGS, None):
        best = from_bytes(raw, cp_isolation=isolation).best()
        if best is not None and best.chaos < 0.2:
            return str(best), best.encoding
    return raw.decode("cp1252", errors="replace"), "cp1252"


_WESTERN_ENCODINGS = ["utf_16", "utf_32", "cp1252", "latin_1", "iso8859_15", "cp850", "mac_roman"]


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows of cell texts as a Markdown table; the first row is the header, short rows are padded."""
    cells = [[" ".join(c.split()).replace("|", "\\|") for c in r] for r in rows if any(c.strip() for c in r)]
    if not cells:
        return ""
    width = max(len(r) for r in cells)
    cells = [r + [""] * (width - len(r)) for r in cells]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * width]
    lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    return "\n".join(lines)
