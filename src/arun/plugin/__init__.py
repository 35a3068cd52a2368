"""The plugin system: registrations, the dependency graph, config and loading."""

from arun.plugin.context import InitContext, Meta, Plugin, PluginSet, load
from arun.plugin.registry import ALL, Registration, Registry, SkipPlugin, default, graph, register
from arun.plugin.types import PluginType

__all__ = [
    "ALL",
    "InitContext",
    "Meta",
    "Plugin",
    "PluginSet",
    "PluginType",
    "Registration",
    "Registry",
    "SkipPlugin",
    "default",
    "graph",
    "load",
    "register",
]
