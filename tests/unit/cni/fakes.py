"""Fake CNI plugins: small Python executables that record every call and do what a
``<type>.behaviour.json`` next to them says. No root, no real networking."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAKE_PLUGIN = r"""#!{python} -S
import json, os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
name = os.path.basename(__file__)
data = sys.stdin.read()
cmd = os.environ.get("CNI_COMMAND", "")
rec = {{
    "plugin": name,
    "env": {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}},
    "stdin": json.loads(data) if data.strip() else None,
    "pid": os.getpid(),
}}
with open(os.path.join(here, "calls.jsonl"), "a") as f:
    f.write(json.dumps(rec) + "\n")
try:
    with open(os.path.join(here, name + ".behaviour.json")) as f:
        behaviour = json.load(f)
except FileNotFoundError:
    behaviour = {{}}
b = behaviour.get(cmd, {{}})
if "sleep" in b:
    time.sleep(b["sleep"])
if "stderr" in b:
    sys.stderr.write(b["stderr"])
if "raw_stdout" in b:
    sys.stdout.write(b["raw_stdout"])
    sys.exit(b.get("exit", 0))
if "error" in b:
    print(json.dumps(b["error"]))
    sys.exit(1)
if "exit" in b:
    sys.exit(b["exit"])
conf = rec["stdin"] or {{}}
if cmd == "ADD":
    if "result" in b:
        out = b["result"]
    elif "prevResult" in conf:
        out = conf["prevResult"]
    else:
        out = {{
            "cniVersion": conf.get("cniVersion", ""),
            "interfaces": [{{"name": os.environ["CNI_IFNAME"], "sandbox": os.environ["CNI_NETNS"]}}],
            "ips": [{{"interface": 0, "address": b.get("address", "10.99.0.2/24"), "gateway": "10.99.0.1"}}],
        }}
        if conf.get("cniVersion", "1.0.0").startswith("0."):
            out["ips"][0]["version"] = "4"
    print(json.dumps(out))
elif cmd == "VERSION":
    versions = behaviour.get("versions", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    print(json.dumps({{"cniVersion": "1.1.0", "supportedVersions": versions}}))
"""


@dataclass
class FakePlugins:
    """A bin dir of fake plugins and the calls they recorded."""

    bin_dir: Path

    def add(self, name: str, **behaviour: Any) -> Path:
        path = self.bin_dir / name
        path.write_text(FAKE_PLUGIN.format(python=sys.executable))
        path.chmod(0o755)
        if behaviour:
            self.behave(name, **behaviour)
        return path

    def behave(self, name: str, **behaviour: Any) -> None:
        (self.bin_dir / f"{name}.behaviour.json").write_text(json.dumps(behaviour))

    def calls(self) -> list[dict[str, Any]]:
        log = self.bin_dir / "calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def commands(self) -> list[tuple[str, str]]:
        """(plugin, CNI_COMMAND) of each call, in order."""
        return [(c["plugin"], c["env"]["CNI_COMMAND"]) for c in self.calls()]

    def clear(self) -> None:
        log = self.bin_dir / "calls.jsonl"
        if log.exists():
            log.unlink()


def write_conflist(conf_dir: Path, filename: str, doc: dict[str, Any]) -> Path:
    conf_dir.mkdir(parents=True, exist_ok=True)
    path = conf_dir / filename
    tmp = conf_dir / f".{filename}.tmp"
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)
    return path
