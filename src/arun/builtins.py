"""Imports every plugin registration module, filling ``arun.plugin.registry.default``
(containerd's ``cmd/containerd/builtins``). Add a line here for each new ``plugin.py``."""

from __future__ import annotations

# ruff: noqa: F401
import arun.content.local.plugin
import arun.cri.plugin
import arun.diff.plugin
import arun.events.plugin
import arun.metadata.plugin
import arun.runtime.plugin
import arun.services.containers.plugin
import arun.services.content.plugin
import arun.services.diff.plugin
import arun.services.events.plugin
import arun.services.healthcheck.plugin
import arun.services.images.plugin
import arun.services.introspection.plugin
import arun.services.leases.plugin
import arun.services.namespaces.plugin
import arun.services.snapshots.plugin
import arun.services.streaming.plugin
import arun.services.tasks.plugin
import arun.services.transfer.plugin
import arun.services.version.plugin
import arun.snapshots.native.plugin
import arun.snapshots.overlay.plugin
import arun.streaming.plugin
import arun.transfer.plugin
