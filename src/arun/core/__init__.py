"""Core types and interfaces (dataclasses and ``typing.Protocol``), no I/O.

Implementations live in their own packages (``arun.content``, ``arun.snapshots``,
``arun.diff``, ``arun.metadata`` …) and are looked up through these protocols.
"""
