"""Turns a stream of token pieces (bytes) into text deltas that are safe to show.

Two things make this more than `piece.decode()`:

- a token may end in the middle of a multi-byte UTF-8 character ("é", an emoji), so bytes are
  accumulated and only complete characters are released;
- a stop string may be split across tokens ("<|end" + "|>"), so text that could still become
  the start of a stop string is held back until it is either confirmed or ruled out. Stop text
  itself is never released.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class IncrementalDetokenizer:
    """Feed pieces with `push`; it returns the text that may be emitted now."""

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = tuple(s for s in stop if s)
        self._held = ""  # decoded text not released yet: a possible start of a stop string
        self.stopped = False  # a stop string was found; nothing more will be released

    def push(self, piece: bytes) -> str:
        """Add one token's bytes; return the text that can be released now ("" if none)."""
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(piece)
        if not self._stop:
            self._held = ""
            return text
        cut = min((i for i in (text.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return text[:cut]
        keep = self._longest_stop_prefix_suffix(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """The held-back text, once generation ended without completing a stop string.

        An incomplete trailing UTF-8 sequence is dropped rather than shown as U+FFFD.
        """
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _longest_stop_prefix_suffix(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
        best = 0
        for stop in self._stop:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best
