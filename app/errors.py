"""The app's error tree. The CLI prints `str(error)` as one line and exits non-zero; the API maps each
kind to an HTTP status in one handler. Errors from the stages (ingest, retrieval, serving) keep their own
base classes and are mapped the same way."""


class ConsultaError(Exception):
    """Base of errors a user can cause and fix; the message says what to do."""

    status = 400
    kind = "bad_request"


class ModelUnavailableError(ConsultaError):
    """The answering model is not installed or its file is missing (seen by whoever runs the assistant)."""

    status = 503
    kind = "model_unavailable"


class NotFoundError(ConsultaError):
    """A collection or document that does not exist (seen by API callers)."""

    status = 404
    kind = "not_found"
