"""The event store's backends, one module per database; :meth:`events.store.EventStore.open` picks one.

``base.py`` holds what they share; ``sqlite.py``, ``postgres.py`` and ``memory.py`` what differs.
"""
