"""Run every benchmark module of this package (``make bench``); see the package docstring."""

from __future__ import annotations

import argparse
import ast
import asyncio
import inspect
import os
import pkgutil
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import arun.benchmarks as package

PACKAGE_DIR = Path(package.__file__).resolve().parent
SRC = PACKAGE_DIR.parent.parent


def _have_overlay() -> bool:
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1] == "overlay" for line in f if line.strip())
    except OSError:
        return False


CHECKS: dict[str, tuple[Callable[[], bool], str]] = {
    "root": (lambda: os.geteuid() == 0, "needs root"),
    "runc": (lambda: shutil.which("runc") is not None, "needs runc"),
    "containerd": (lambda: shutil.which("containerd") is not None, "needs containerd"),
    "ctr": (lambda: shutil.which("ctr") is not None, "needs ctr"),
    "overlay": (_have_overlay, "needs overlayfs"),
    "gcc": (lambda: shutil.which("gcc") is not None, "needs gcc"),
    "docker-registry": (lambda: shutil.which("docker-registry") is not None, "needs docker-registry"),
    "busybox": (lambda: os.path.exists("/bin/busybox"), "needs /bin/busybox"),
}


@dataclass
class Module:
    name: str
    path: Path
    requires: tuple[str, ...]
    summary: str

    def missing(self) -> str | None:
        for word in self.requires:
            check = CHECKS.get(word)
            if check is None:
                return f"unknown requirement {word!r}"
            if not check[0]():
                return check[1]
        return None


def _literal(tree: ast.Module, name: str) -> object:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                return None
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            try:
                return ast.literal_eval(node.value) if node.value is not None else None
            except ValueError:
                return None
    return None


def discover() -> list[Module]:
    """The benchmark modules, read without importing them (imports may need root or tools)."""
    out = []
    for info in sorted(pkgutil.iter_modules([str(PACKAGE_DIR)]), key=lambda m: m.name):
        if not info.name.endswith("_bench"):
            continue
        path = PACKAGE_DIR / f"{info.name}.py"
        tree = ast.parse(path.read_text(), str(path))
        requires = _literal(tree, "REQUIRES")
        summary = _literal(tree, "SUMMARY")
        if not isinstance(summary, str):
            doc = ast.get_docstring(tree) or ""
            summary = doc.strip().splitlines()[0] if doc.strip() else ""
        out.append(
            Module(
                name=info.name,
                path=path,
                requires=tuple(str(r) for r in requires) if isinstance(requires, list | tuple) else (),
                summary=summary,
            )
        )
    return out


def run_module(name: str, argv: list[str]) -> int:
    """In the child process: import the module and call its ``main``."""
    import importlib

    module = importlib.import_module(f"{package.__name__}.{name}")
    main = module.main
    result = main(argv)
    if inspect.iscoroutine(result):
        result = asyncio.run(result)
    return int(result or 0)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in args_in:
        i = args_in.index("--")
        args_in, passthrough = args_in[:i], args_in[i + 1 :]
    p = argparse.ArgumentParser(prog="python -m arun.benchmarks", description="Run arun's benchmark modules.")
    p.add_argument("--list", action="store_true", help="list the modules and exit")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("names", nargs="*", help="run only modules whose name contains one of these")
    args = p.parse_args(args_in)
    if args.child:
        return run_module(args.child, passthrough)
    modules = discover()
    if args.list:
        print(
            _table(
                [
                    ["module", "requires", "what"],
                    *([m.name, ",".join(m.requires) or "-", m.summary] for m in modules),
                ]
            )
        )
        return 0
    wanted = [m for m in modules if not args.names or any(n in m.name for n in args.names)]
    if not wanted:
        print(f"no benchmark module matches {args.names}", file=sys.stderr)
        return 2
    rows = [["module", "status", "seconds"]]
    failed = False
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH", "")])])
    for m in wanted:
        print(f"== {m.name}", flush=True)
        reason = m.missing()
        if reason:
            print(f"skipped: {reason}", flush=True)
            rows.append([m.name, f"skipped: {reason}", "-"])
            continue
        t = time.monotonic()
        cmd = [sys.executable, "-m", "arun.benchmarks", "--child", m.name, "--", *passthrough]
        try:
            code = subprocess.run(cmd, env=env, check=False).returncode
        except KeyboardInterrupt:
            rows.append([m.name, "interrupted", f"{time.monotonic() - t:.1f}"])
            print(_table(rows))
            return 130
        status = "ok" if code == 0 else f"failed (exit {code})"
        failed |= code != 0
        rows.append([m.name, status, f"{time.monotonic() - t:.1f}"])
    print("\n== summary")
    print(_table(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
