"""Every failure a client can see, as one exception tree.

    QuorumError                  500 server_error
      ClientError                400-class, the message is shown to the client as is
        BadRequest               400 invalid_request_error (names the offending field in `param`)
        NotFound                 404 invalid_request_error (unknown URL)
        ModelNotFound            404 invalid_request_error, code model_not_found
        MethodNotAllowed         405 invalid_request_error
        PayloadTooLarge          413 invalid_request_error
      UpstreamError              502 server_error (a model Quorum called itself failed)
      Overloaded                 503 server_error, with retry-after (extproc.admission refused it)
      InternalError              500 server_error

`extproc.envoy.error_response` turns any of them into an OpenAI error object sent as an
ImmediateResponse; nothing else builds error bodies.
"""

from __future__ import annotations

from typing import Any


class QuorumError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = "internal_error"
    headers: dict[str, str] = {}  # sent with the error (retry-after); subclasses set their own

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def to_openai(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class ClientError(QuorumError):
    status = 400
    type = "invalid_request_error"
    code = None


class BadRequest(ClientError):
    status = 400
    code = "invalid_request"


class NotFound(ClientError):
    status = 404
    code = "unknown_url"


class ModelNotFound(ClientError):
    status = 404
    code = "model_not_found"


class MethodNotAllowed(ClientError):
    status = 405
    code = "method_not_allowed"


class PayloadTooLarge(ClientError):
    status = 413
    code = "payload_too_large"


class UpstreamError(QuorumError):
    status = 502
    type = "server_error"
    code = "upstream_error"


class Overloaded(QuorumError):
    status = 503
    type = "server_error"
    code = "overloaded"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.headers = {"retry-after": str(retry_after)}


class InternalError(QuorumError):
    status = 500
    type = "server_error"
    code = "internal_error"
