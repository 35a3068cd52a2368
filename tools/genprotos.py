"""Generate src/arun/api from protos/.

protoc writes modules whose imports are rooted at the proto include path
(``from containerd.types import mount_pb2``). arun ships them inside the
``arun.api`` package, so every import of a generated module is rewritten to
``arun.api.<module>``; ``google.protobuf`` imports are left alone. The output is
deterministic so that ``make check-protos`` can diff it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "src" / "arun" / "api"

HEADER = '"""Generated from protos/ by tools/genprotos.py (make protos). Do not edit."""\n'


def _module_of(proto: Path) -> str:
    rel = proto.relative_to(PROTOS).with_suffix("")
    return ".".join(rel.parts)


def main() -> int:
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(PROTOS.rglob("*.proto"))
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={OUT}",
        f"--pyi_out={OUT}",
        f"--plugin=protoc-gen-grpclib_python={Path(sys.executable).parent / 'protoc-gen-grpclib_python'}",
        f"--grpclib_python_out={OUT}",
        *[str(p.relative_to(PROTOS)) for p in protos],
    ]
    subprocess.run(cmd, check=True, cwd=PROTOS)

    modules = set()
    for p in protos:
        base = _module_of(p)
        modules.add(base + "_pb2")
        modules.add(base + "_grpc")
    packages = {m.rsplit(".", 1)[0] for m in modules}
    # Longest first so that a.b.c_pb2 is not half-matched by a shorter name.
    names = sorted(modules | packages, key=len, reverse=True)
    alternation = "|".join(re.escape(n) for n in names)
    from_re = re.compile(rf"^(\s*)from ({alternation}) import ", re.M)
    module_alternation = "|".join(re.escape(m) for m in sorted(modules, key=len, reverse=True))
    token_re = re.compile(rf"(?<![\w./])({module_alternation})\b")

    # grpclib writes a stub module for every file; keep only those with services.
    for stub in OUT.rglob("*_grpc.py"):
        if "class " not in stub.read_text():
            stub.unlink()

    for path in sorted(OUT.rglob("*.py*")):
        if path.suffix not in (".py", ".pyi"):
            continue
        text = path.read_text()
        text = from_re.sub(lambda m: f"{m.group(1)}from arun.api.{m.group(2)} import ", text)
        # grpclib stubs use `import a.b.c_pb2` and refer to `a.b.c_pb2.Msg`.
        lines = []
        for line in text.splitlines(keepends=True):
            if line.startswith(("b'", 'b"', "DESCRIPTOR")) or "AddSerializedFile" in line:
                lines.append(line)
                continue
            lines.append(token_re.sub(r"arun.api.\1", line))
        text = "".join(lines)
        path.write_text(HEADER + text if path.suffix == ".py" else text)

    for d in sorted({OUT, *(p.parent for p in OUT.rglob("*.py"))}):
        while True:
            init = d / "__init__.py"
            if not init.exists():
                init.write_text(HEADER)
            if d == OUT:
                break
            d = d.parent
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
