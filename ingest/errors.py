"""Errors raised while reading and ingesting files; messages name the file and what to do."""


class IngestError(Exception):
    """Base of ingestion errors; the CLI prints the message, the API maps it to a status."""


class FileFormatError(IngestError):
    """A file cannot be read as its format (corrupt, encrypted, empty, no text layer, unsupported)."""


class InputPathError(IngestError):
    """A path given to ingest does not exist or holds no supported file."""
