"""Registries over the distribution v2 API: endpoints (hosts.toml, mirrors), auth, the
HTTP client with retries and resume, and per-repository operations.

    async with RegistryClient(HostsConfig(config_path=[...]), credentials=creds) as client:
        repo = client.repository("docker.io/library/busybox:latest")
        desc = await repo.resolve()
        async for chunk in repo.iter_blob(desc): ...
"""

from arun.remotes.auth import AuthConfig, Credentials, StaticCredentials, credentials_from_auth_config
from arun.remotes.client import ClientOptions, RegistryClient, RetryPolicy
from arun.remotes.hosts import Capability, HostsConfig, RegistryHost
from arun.remotes.repository import Repository

__all__ = [
    "AuthConfig",
    "Capability",
    "ClientOptions",
    "Credentials",
    "HostsConfig",
    "RegistryClient",
    "RegistryHost",
    "Repository",
    "RetryPolicy",
    "StaticCredentials",
    "credentials_from_auth_config",
]
