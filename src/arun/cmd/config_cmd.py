"""``arun config default`` and ``arun config dump``, as ``containerd config …``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from arun import builtins as _builtins  # noqa: F401  (fills the registry)
from arun.errdefs import ArunError
from arun.plugin import config as configmod
from arun.plugin.registry import default as registry


def plugin_defaults() -> dict[str, Any]:
    """The default table of every registered plugin that has a config."""
    return {r.uri: configmod.to_dict(r.config()) for r in registry if r.config is not None}


def render(cfg: configmod.Config) -> str:
    data = configmod.to_dict(cfg)
    data["plugins"] = {**plugin_defaults(), **data["plugins"]}
    return configmod.dumps(data)


def main(args: argparse.Namespace) -> int:
    if args.config_command == "default":
        sys.stdout.write(render(configmod.Config()))
        return 0
    try:
        path = args.config or configmod.DEFAULT_CONFIG
        cfg = configmod.load(path, missing_ok=args.config is None)
        for reg in registry:
            if reg.config is not None and reg.uri in cfg.plugins:
                where = f"{cfg.source}: [plugins.{reg.uri!r}]"
                cfg.plugins[reg.uri] = configmod.to_dict(
                    configmod.decode(reg.config, cfg.plugins[reg.uri], where=where)
                )
    except ArunError as e:
        print(f"arun: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(render(cfg))
    return 0
