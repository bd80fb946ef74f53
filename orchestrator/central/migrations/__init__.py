"""Central's database schema, versioned by Alembic: one revision per change, applied at start.

The rule: every table on ``history.metadata`` (history, catalog, players, audit) is created and
changed only by a revision in ``versions/``; central runs ``upgrade head`` when it starts (so a
fresh database, a test and the lab need nothing else) and ``acefleet-central db upgrade`` runs the
same thing before a deploy restarts it. A database that an older central built with
``create_all`` (its tables, but no ``alembic_version``) is adopted: what revision 0001 would have
made and is missing is made, then it is stamped 0001 and upgraded like any other.
"""
