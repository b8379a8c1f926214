"""Champion vs challenger as use cases: resolve both sides, then compare in the domain.

Resolving is the access check: the caller must be able to view each model, and a model
they may not see answers 404 as if it did not exist, exactly as ``resolve`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from modelyard.domain.access import Caller
from modelyard.domain.comparison import (
    Comparison,
    GateResult,
    against_reference,
    compare_versions,
    evaluate_gate,
    validate_gate,
)
from modelyard.domain.models import Version
from modelyard.domain.references import Reference, parse_reference
from modelyard.domain.rules import Subject
from modelyard.service.online import OnlineMetricsService


class _Resolves(Protocol):
    online: OnlineMetricsService

    def resolve(self, reference: str | Reference, *, caller: Caller) -> Version: ...


class Comparisons:
    """Mixed into RegistryService, so these are ``service.compare`` and ``service.gate``
    while living apart from the registry's other use cases."""

    def compare(self: _Resolves, a: str, b: str, *, caller: Caller) -> Comparison:
        """Any two references, even of different models."""
        return compare_versions(self.resolve(a, caller=caller), self.resolve(b, caller=caller))

    def gate(
        self: _Resolves,
        challenger: str,
        against: str,
        *,
        caller: Caller,
        metrics: Sequence[str],
        min_delta: float = 0.0,
        lower_is_better: bool = False,
    ) -> GateResult:
        """Judge ``challenger`` against ``against`` (an alias of its model, or a reference)."""
        # Before any lookup: bad input is the first answer.
        validate_gate(metrics, min_delta, lower_is_better=lower_is_better)
        ref = parse_reference(challenger)
        sides = (
            self.resolve(ref, caller=caller),
            self.resolve(against_reference(ref.model, against), caller=caller),
        )
        ours, theirs = (
            Subject(v, online=self.online.latest(caller, v.model, v.version)) for v in sides
        )
        return evaluate_gate(
            ours,
            theirs,
            metrics,
            min_delta=min_delta,
            lower_is_better=lower_is_better,
        )
