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


class AuthenticationError(ConsultaError):
    """No credential, or a wrong, expired or revoked one (seen by API callers and at the UI's login)."""

    status = 401
    kind = "unauthorized"


class PermissionDeniedError(ConsultaError):
    """The caller is known but their role or grants do not allow this (seen by API callers)."""

    status = 403
    kind = "forbidden"


class ConflictError(ConsultaError):
    """The thing to create already exists (a user name, a group) (seen by admins)."""

    status = 409
    kind = "conflict"


class PayloadTooLargeError(ConsultaError):
    """An upload over the size limit (seen by editors uploading documents)."""

    status = 413
    kind = "too_large"
