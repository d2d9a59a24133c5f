"""Alembic environment: runs on the connection ``journal.upgrade`` hands over."""

from alembic import context

from ceilo_notifier import journal

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=journal.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    version_table=journal.VERSION_TABLE,
)
with context.begin_transaction():
    context.run_migrations()
