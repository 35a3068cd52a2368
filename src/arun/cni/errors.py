"""Errors of the CNI layer, as errdefs classes.

A plugin that fails prints ``{"cniVersion", "code", "msg", "details"}`` on
stdout and exits non-zero. The well-known codes of the CNI spec decide which
errdefs class the failure becomes; the plugin's own text stays in the message
and on the exception (``cni_code``, ``cni_msg``, ``details``).
"""

from __future__ import annotations

from arun.errdefs import (
    ArunError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)

__all__ = [
    "CNINotInitializedError",
    "InvalidConfigError",
    "InvalidResultError",
    "PluginError",
    "PluginFailedPreconditionError",
    "PluginInternalError",
    "PluginInvalidArgumentError",
    "PluginNotFoundError",
    "PluginUnavailableError",
    "PluginUnknownContainerError",
    "plugin_error",
]

# Well-known error codes (CNI SPEC, "Well-known Error Codes").
ERR_UNKNOWN = 0
ERR_INCOMPATIBLE_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENV = 4
ERR_IO_FAILURE = 5
ERR_DECODING_FAILURE = 6
ERR_INVALID_NETWORK_CONFIG = 7
ERR_INVALID_NETNS = 8  # libcni's types.ErrInvalidNetNS
ERR_TRY_AGAIN_LATER = 11
ERR_PLUGIN_NOT_AVAILABLE = 50
ERR_LIMITED_CONNECTIVITY = 51
ERR_INTERNAL = 999


class CNINotInitializedError(FailedPreconditionError):
    """No usable network configuration is loaded (the CRI's NetworkReady=false)."""


class InvalidConfigError(InvalidArgumentError):
    """A network configuration file or document is malformed or inconsistent."""


class InvalidResultError(InternalError):
    """A plugin succeeded but printed a result that is not a valid CNI result."""


class PluginNotFoundError(FailedPreconditionError):
    """The executable for a plugin ``type`` is not in any of the plugin directories."""


class PluginError(ArunError):
    """A plugin ran and reported failure. Subclasses carry the errdefs code.

    This base itself maps to UNKNOWN, for plugin-specific codes (100+) and
    failures without a parseable error document.
    """

    def __init__(
        self,
        message: str,
        *,
        plugin: str = "",
        command: str = "",
        cni_code: int = ERR_UNKNOWN,
        cni_msg: str = "",
        details: str = "",
        stderr: str = "",
    ) -> None:
        super().__init__(message)
        self.plugin = plugin
        self.command = command
        self.cni_code = cni_code
        self.cni_msg = cni_msg
        self.details = details
        self.stderr = stderr


class PluginInvalidArgumentError(PluginError, InvalidArgumentError):
    pass


class PluginFailedPreconditionError(PluginError, FailedPreconditionError):
    pass


class PluginUnknownContainerError(PluginError, NotFoundError):
    pass


class PluginUnavailableError(PluginError, UnavailableError):
    pass


class PluginInternalError(PluginError, InternalError):
    pass


_BY_CNI_CODE: dict[int, type[PluginError]] = {
    ERR_INCOMPATIBLE_VERSION: PluginFailedPreconditionError,
    ERR_UNSUPPORTED_FIELD: PluginInvalidArgumentError,
    ERR_UNKNOWN_CONTAINER: PluginUnknownContainerError,
    ERR_INVALID_ENV: PluginInvalidArgumentError,
    ERR_IO_FAILURE: PluginInternalError,
    ERR_DECODING_FAILURE: PluginInvalidArgumentError,
    ERR_INVALID_NETWORK_CONFIG: PluginInvalidArgumentError,
    ERR_INVALID_NETNS: PluginInvalidArgumentError,
    ERR_TRY_AGAIN_LATER: PluginUnavailableError,
    ERR_PLUGIN_NOT_AVAILABLE: PluginUnavailableError,
    ERR_LIMITED_CONNECTIVITY: PluginUnavailableError,
    ERR_INTERNAL: PluginInternalError,
}


def plugin_error(
    message: str,
    *,
    plugin: str,
    command: str,
    cni_code: int = ERR_UNKNOWN,
    cni_msg: str = "",
    details: str = "",
    stderr: str = "",
) -> PluginError:
    """The PluginError subclass for a CNI error ``cni_code``."""
    cls = _BY_CNI_CODE.get(cni_code, PluginError)
    return cls(
        message,
        plugin=plugin,
        command=command,
        cni_code=cni_code,
        cni_msg=cni_msg,
        details=details,
        stderr=stderr,
    )
