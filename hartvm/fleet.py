"""``hartvm.fleet``: many commands across the machines of a Ray cluster.

The implementation is a frontend (frontends/fleet.py, where ARCHITECTURE.md
puts it); this module only gives it the public name, so that both ``import
hartvm.fleet`` and ``from hartvm import fleet`` work (the lazy names of
``hartvm/__init__.py`` are attributes, not modules one can import).
"""

from .frontends.fleet import Fleet, Result, map

__all__ = ["Fleet", "Result", "map"]
