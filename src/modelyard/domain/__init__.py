"""Pure domain logic: entities, references, validation, the filter language. No I/O."""
