"""Modelyard: a self-hosted ML model registry.

>>> import modelyard
>>> reg = modelyard.connect("http://127.0.0.1:8080")   # or a local directory
>>> v = reg.register("churn", "model_dir/", metrics={"auc": 0.87})
>>> reg.set_alias("churn", "champion", v.version)
>>> reg.download("churn@champion", "deploy/")
"""

from modelyard._version import __version__
from modelyard.client.registry import Registry, connect
from modelyard.domain.access import Grant, Identity, NewToken, Principal, Role, Token
from modelyard.domain.comparison import (
    Comparison,
    Difference,
    FileDifference,
    GateCheck,
    GateResult,
)
from modelyard.domain.errors import (
    Conflict,
    DigestMismatch,
    Forbidden,
    InvalidFilter,
    InvalidInput,
    ModelyardError,
    NotFound,
    PolicyFailed,
    Unauthorized,
)
from modelyard.domain.evidence import Attachment, Card, Comment
from modelyard.domain.gc import GcReport
from modelyard.domain.journal import JournalReport
from modelyard.domain.lifecycle import Evaluation, Promotion, TransitionRequest
from modelyard.domain.manifest import FileEntry
from modelyard.domain.models import (
    DatasetRef,
    Environment,
    Event,
    Model,
    Origin,
    Page,
    SourceRef,
    Version,
)
from modelyard.domain.webhooks import NewSubscription, Subscription

__all__ = [
    "Attachment",
    "Card",
    "Comment",
    "Comparison",
    "Conflict",
    "DatasetRef",
    "Difference",
    "DigestMismatch",
    "Environment",
    "Evaluation",
    "Event",
    "FileDifference",
    "FileEntry",
    "Forbidden",
    "GateCheck",
    "GateResult",
    "GcReport",
    "Grant",
    "Identity",
    "InvalidFilter",
    "InvalidInput",
    "JournalReport",
    "Model",
    "ModelyardError",
    "NewSubscription",
    "NewToken",
    "NotFound",
    "Origin",
    "Page",
    "PolicyFailed",
    "Principal",
    "Promotion",
    "Registry",
    "Role",
    "SourceRef",
    "Subscription",
    "Token",
    "TransitionRequest",
    "Unauthorized",
    "Version",
    "__version__",
    "connect",
]
