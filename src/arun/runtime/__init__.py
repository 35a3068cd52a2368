"""The runtime v2 manager: shims, bundles and tasks (containerd's ``core/runtime/v2``).

``manager.TaskManager`` is the ``io.containerd.runtime.v2.task`` plugin's instance
(``arun.core.runtime.TaskRuntime``). Nothing is imported here: ``python -m
arun.runtime.zygote`` must start without the daemon's modules.
"""
