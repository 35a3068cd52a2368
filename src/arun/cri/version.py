"""CRI Version: the runtime's name and version."""

from __future__ import annotations

from arun.api.cri.runtime.v1 import api_pb2
from arun.cri.constants import KUBE_API_VERSION, RUNTIME_API_VERSION, RUNTIME_NAME
from arun.version import VERSION


def version(req: api_pb2.VersionRequest) -> api_pb2.VersionResponse:
    return api_pb2.VersionResponse(
        version=KUBE_API_VERSION,
        runtime_name=RUNTIME_NAME,
        runtime_version=VERSION,
        runtime_api_version=RUNTIME_API_VERSION,
    )
