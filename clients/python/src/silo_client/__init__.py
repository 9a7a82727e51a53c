"""Async Python client for Silo's REST API.

``Silo`` is a customer's backend's client (an organization's API key):
embed users, sessions, datasets, uploads, datasources and groups.
``SiloSession`` is an embed user's (a session token): its datasets, rows
(whole or streamed), metadata and summaries. Every non-2xx answer raises a
``SiloError`` subclass named by the error's stable code.

The request and response types in :mod:`silo_client.models` are generated
from the server's OpenAPI document (``clients/generate``).
"""

from . import models
from ._upload import ProgressCallback, UploadSource
from .client import (
    Datasets,
    Datasources,
    EmbedUsers,
    Groups,
    NewKey,
    NewSession,
    Orgs,
    Sessions,
    Silo,
)
from .errors import (
    Busy,
    Conflict,
    ConnectorFailed,
    DatasourceFailed,
    Forbidden,
    Internal,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    RequestTimeout,
    SiloError,
    Unauthorized,
)
from .session import FetchResult, Row, RowStream, SiloSession

__version__ = "0.1.0"

__all__ = [
    "Silo",
    "SiloSession",
    "NewSession",
    "NewKey",
    "RowStream",
    "Row",
    "FetchResult",
    "UploadSource",
    "ProgressCallback",
    "EmbedUsers",
    "Sessions",
    "Datasets",
    "Datasources",
    "Groups",
    "Orgs",
    "models",
    "SiloError",
    "InvalidRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "RequestTimeout",
    "Conflict",
    "LimitExceeded",
    "Busy",
    "ConnectorFailed",
    "DatasourceFailed",
    "Internal",
]
