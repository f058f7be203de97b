"""Access tokens and the dependencies every API uses to know who is calling.

An API opts in by setting ``app.state.token_public_key`` (and optionally
``app.state.session_check``) in its lifespan.
"""

from shared.auth.dependencies import CurrentUser, current_claims, require_roles
from shared.auth.tokens import (
    ALGORITHMS,
    AUDIENCE,
    ISSUER,
    Claims,
    InvalidToken,
    OperatorRole,
    issue_token,
    verify_token,
)

__all__ = [
    "ALGORITHMS",
    "AUDIENCE",
    "ISSUER",
    "Claims",
    "CurrentUser",
    "InvalidToken",
    "OperatorRole",
    "current_claims",
    "issue_token",
    "require_roles",
    "verify_token",
]
