"""Relational metadata: SQLAlchemy Core tables, queries and Alembic migrations."""
