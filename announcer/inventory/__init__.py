"""The inventory: districts, switches and subscribers, from billing into Redis.

``csv_source`` and ``billing`` read tables, ``build`` checks rows and
assembles an ``Inventory``, ``store`` swaps it into Redis atomically and
reports what changed.
"""
