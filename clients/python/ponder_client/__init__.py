"""ponder_client: a typed client for Ponder (OpenAI-compatible inference-time scaling server).

from ponder_client import Ponder
r = Ponder("http://localhost:8000").chat("What is 12 + 7?", strategy="majority_vote", samples=8)
print(r.answer, r.confidence)
"""

from ._client import (
    NOT_GIVEN,
    PONDER_OPTIONS,
    AsyncPonder,
    Ponder,
    extra_body,
    metadata,
    ponder_options,
)
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    PonderError,
    RateLimitError,
    ServiceUnavailableError,
    UnprocessableEntityError,
)
from ._types import Candidate, Model, PonderMetadata, Result, TallyEntry, Timing, Usage

__version__ = "0.1.0"

__all__ = [
    "NOT_GIVEN",
    "PONDER_OPTIONS",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncPonder",
    "AuthenticationError",
    "BadRequestError",
    "Candidate",
    "InternalServerError",
    "Model",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Ponder",
    "PonderError",
    "PonderMetadata",
    "RateLimitError",
    "Result",
    "ServiceUnavailableError",
    "TallyEntry",
    "Timing",
    "UnprocessableEntityError",
    "Usage",
    "extra_body",
    "metadata",
    "ponder_options",
]
