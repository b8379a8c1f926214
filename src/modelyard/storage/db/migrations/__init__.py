"""Alembic migrations of the metadata schema."""

# The newest revision. Checked against Alembic's own idea of the head by a test, so that
# start-up can skip importing Alembic when the schema is already current.
HEAD_REVISION = "0021"
