"""Use cases: the only place business rules, transactions and journal events live."""

from modelyard.service.registry import RegistryService

__all__ = ["RegistryService"]
