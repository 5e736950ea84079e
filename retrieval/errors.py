"""Errors raised by the retrieval layer. Their messages are shown to users as they are."""


class RetrievalError(Exception):
    """Base of retrieval errors; the CLI prints the message, the API maps it to a status."""


class IndexNotFoundError(RetrievalError):
    """No index exists yet under the data dir (seen by someone who searches before ingesting)."""


class EmbedderMismatchError(RetrievalError):
    """The index was built with another embedding model or chunker (seen by whoever changed settings)."""


class IndexCorruptError(RetrievalError):
    """The index files on disk are unreadable or inconsistent (seen by an operator)."""


class EmbedderUnavailableError(RetrievalError):
    """The configured embedding model cannot be loaded (missing package or folder)."""


class IndexWriteError(RetrievalError):
    """The new index generation could not be written (disk full, read-only, quota); the previous one is kept
    (seen by whoever ingests, and by an operator)."""
