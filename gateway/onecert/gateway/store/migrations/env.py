"""Alembic environment: runs on a connection handed over by the store.

There is no ``alembic.ini``: :meth:`onecert.gateway.store.Store.upgrade` (and
``onecert db upgrade``) builds the configuration in code and passes an open
connection in ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context

from onecert.gateway.store._models import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `onecert db upgrade` or Store.upgrade()")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things: later migrations copy tables instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
