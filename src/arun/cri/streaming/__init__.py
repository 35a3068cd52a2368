"""The CRI streaming server: the HTTP endpoint behind the URLs of Exec, Attach and PortForward.

How the CRI plugin uses it::

    from arun.cri.streaming import StreamingServer, from_cri_config

    server = StreamingServer(runtime, from_cri_config(
        stream_server_address=cfg.stream_server_address,   # "127.0.0.1" by default
        stream_server_port=cfg.stream_server_port,         # "0": a free port
        stream_idle_timeout=cfg.stream_idle_timeout,       # "4h0m0s"
    ))
    await server.start()                                   # at plugin init
    ...
    return server.get_exec(request)                        # in Exec: ExecResponse(url=...)
    return server.get_attach(request)                      # in Attach
    return server.get_port_forward(request)                # in PortForward
    ...
    await server.stop()                                    # at plugin close

``runtime`` implements :class:`StreamingRuntime` (``exec``, ``attach``,
``port_forward``); :func:`netns.port_forward` does the copying for port-forward
once the pod's network namespace path is known (None for host network). The
``get_*`` methods raise ``InvalidArgumentError`` for bad requests (as
containerd's server does) and ``ResourceExhaustedError`` past 1000 waiting
tokens; checks that need the stores (the container exists and runs, the sandbox
is ready) belong to the plugin, before it calls them.

Layout: :mod:`spdy` (SPDY/3.1 codec and state, sans-IO), :mod:`channels`
(WebSocket channel framing, sans-IO), :mod:`status` (exit status JSON),
:mod:`cache` (tokens), :mod:`session` and :mod:`websocket` (asyncio edges),
:mod:`upgrade` (taking an aiohttp connection over for SPDY),
:mod:`remotecommand` and :mod:`portforward` (the protocols), :mod:`server`.
"""

from __future__ import annotations

from arun.cri.streaming import netns
from arun.cri.streaming.config import StreamingConfig, from_cri_config, parse_go_duration
from arun.cri.streaming.runtime import (
    DuplexStream,
    InputStream,
    OutputStream,
    ResizeEvents,
    StreamingRuntime,
    TerminalSize,
)
from arun.cri.streaming.server import StreamingServer

__all__ = [
    "DuplexStream",
    "InputStream",
    "OutputStream",
    "ResizeEvents",
    "StreamingConfig",
    "StreamingRuntime",
    "StreamingServer",
    "TerminalSize",
    "from_cri_config",
    "netns",
    "parse_go_duration",
]
