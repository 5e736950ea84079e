"""Errors raised while reading and ingesting files; messages name the file and what to do."""


class IngestError(Exception):
    """Base of ingestion errors; the CLI prints the message, the API maps it to a status."""


class FileFormatError(IngestError):
    """A file cannot be read as its format; seen by the user as one line naming the file and the reason.

    `reason` is a short code for machines (the `--json` summary): corrupt, encrypted, empty, no_text,
    too_large, misnamed, unsupported, timeout, out_of_memory, crashed, unreadable.
    """

    def __init__(self, message: str, reason: str = "unreadable") -> None:
        super().__init__(message)
        self.reason = reason


class InputPathError(IngestError):
    """A path given to ingest does not exist or holds no supported file."""


class IndexSettingsMismatchError(IngestError):
    """The index was built with other chunker settings; mixing chunkings needs `consulta reindex` (seen by the CLI)."""
