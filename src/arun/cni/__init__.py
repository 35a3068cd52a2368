"""CNI: network configuration, plugin invocation and pod networking.

Layers, bottom up:

- ``types``   spec versions, plugin results (0.1.0 … 1.1.0), capability arguments
- ``conf``    reading ``.conf``/``.conflist``/``.json`` files and conf dirs as libcni does
- ``invoke``  finding and running plugin executables (the ``CNI_*`` protocol)
- ``network`` ADD/DEL/CHECK/STATUS/GC of a network list, with libcni's result cache
- ``pod``     ``PodNetwork``, the facade the CRI plugin uses (go-cni's role in containerd)

Network namespaces themselves live in ``arun.netns``.
"""

from arun.cni.conf import DEFAULT_CONF_DIR, NetworkConfigList, PluginConfig, load_conf_dir
from arun.cni.errors import (
    CNINotInitializedError,
    InvalidConfigError,
    InvalidResultError,
    PluginError,
    PluginNotFoundError,
)
from arun.cni.invoke import DEFAULT_BIN_DIRS, DEFAULT_PLUGIN_TIMEOUT
from arun.cni.network import CNI, DEFAULT_CACHE_DIR, RuntimeConf
from arun.cni.pod import (
    NOT_READY_REASON,
    InterfaceConfig,
    NetworkStatus,
    PodNetwork,
    PodNetworkHandle,
    PodNetworkRequest,
    PodNetworkResult,
)
from arun.cni.types import DNS, BandWidth, DNSConfig, IPConfig, IPRange, PortMapping, Result, Route

__all__ = [
    "CNI",
    "DEFAULT_BIN_DIRS",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_CONF_DIR",
    "DEFAULT_PLUGIN_TIMEOUT",
    "DNS",
    "NOT_READY_REASON",
    "BandWidth",
    "CNINotInitializedError",
    "DNSConfig",
    "IPConfig",
    "IPRange",
    "InterfaceConfig",
    "InvalidConfigError",
    "InvalidResultError",
    "NetworkConfigList",
    "NetworkStatus",
    "PluginConfig",
    "PluginError",
    "PluginNotFoundError",
    "PodNetwork",
    "PodNetworkHandle",
    "PodNetworkRequest",
    "PodNetworkResult",
    "PortMapping",
    "Result",
    "Route",
    "RuntimeConf",
    "load_conf_dir",
]
