"""Compare the wire surface of two protobuf trees (ours against upstream).

Both sides are compiled with grpc_tools.protoc into FileDescriptorSets
(``--descriptor_set_out --include_imports``) and compared by full name:

* messages: every field's name, number, type, type_name, label, oneof
  membership and proto3 ``optional``, the explicit ``packed`` option, whether
  the message is a map entry, and the file syntax;
* enums: value name -> number;
* services: each method's input/output type and client/server streaming.

Items only upstream are reported as ``missing``, items only in ours as
``extra``, and anything else as ``changed``. Exit status: 0 when nothing
differs, 1 when something does, 2 on usage or compile errors.

Upstream trees often cannot be compiled as they are (gogoproto imports,
imports rooted at a Go module path), so the upstream side is compiled from a
temporary, sanitised copy of its ``.proto`` files:

* imports that resolve on no include path are dropped (and ``--drop-import``
  drops more by glob);
* custom options (``option (x) = ...;`` and ``[(x) = ...]`` entries) are
  removed; they never change the wire;
* ``--theirs-import-prefix OLD=NEW`` rewrites import paths, e.g.
  ``github.com/containerd/containerd/api/=api/``.

The upstream tree can be read straight from a (bare) git repository with
``--theirs-git REPO [--theirs-rev REV]``; ``--theirs`` and ``--theirs-include``
are then paths inside that revision.

By default only the definitions of the files named with ``--ours-file`` /
``--theirs-file`` are compared (``--all-files`` widens that to everything
they import); ``--only-package`` narrows it further.

Example (CRI against upstream cri-api)::

    python tools/compare_protos.py --ours protos --ours-file cri/runtime/v1/api.proto \\
        --theirs-git /work/.mirror/kubernetes+cri-api/repo --theirs pkg/apis/runtime/v1 \\
        --theirs-file api.proto --only-package runtime.v1
"""

from __future__ import annotations

import argparse
import fnmatch
import io
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import descriptor_pb2

FDP = descriptor_pb2.FieldDescriptorProto

# ---------------------------------------------------------------------------
# Sanitising upstream sources

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>//[^\n]*|/\*.*?\*/)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<word>[A-Za-z_][A-Za-z0-9_.]*|[0-9][A-Za-z0-9_.]*(?:[eE][+-][0-9]+)?)
  | (?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Token:
    text: str
    start: int
    end: int


def tokenize(source: str) -> list[Token]:
    """Significant tokens of a .proto source (whitespace and comments dropped)."""
    tokens = []
    for m in _TOKEN_RE.finditer(source):
        if m.lastgroup in ("ws", "comment"):
            continue
        tokens.append(Token(m.group(), m.start(), m.end()))
    return tokens


def _unquote(text: str) -> str:
    return text[1:-1].encode().decode("unicode_escape")


def _statement_end(tokens: Sequence[Token], i: int) -> int:
    """Index of the ';' ending the statement that starts at i (braces nest)."""
    depth = 0
    for j in range(i, len(tokens)):
        t = tokens[j].text
        if t in ("{", "["):
            depth += 1
        elif t in ("}", "]"):
            depth -= 1
        elif t == ";" and depth == 0:
            return j
    raise ValueError(f"unterminated statement at offset {tokens[i].start}")


def _bracket_end(tokens: Sequence[Token], i: int) -> int:
    depth = 0
    for j in range(i, len(tokens)):
        t = tokens[j].text
        if t in ("{", "["):
            depth += 1
        elif t in ("}", "]"):
            depth -= 1
            if depth == 0:
                return j
    raise ValueError(f"unbalanced '[' at offset {tokens[i].start}")


def _split_entries(tokens: Sequence[Token], lo: int, hi: int) -> list[tuple[int, int]]:
    """Split tokens[lo:hi] at top-level commas into (first, last) index pairs."""
    entries = []
    depth = 0
    first = lo
    for j in range(lo, hi):
        t = tokens[j].text
        if t in ("{", "[", "("):
            depth += 1
        elif t in ("}", "]", ")"):
            depth -= 1
        elif t == "," and depth == 0:
            if j > first:
                entries.append((first, j - 1))
            first = j + 1
    if hi > first:
        entries.append((first, hi - 1))
    return entries


@dataclass
class SanitizeResult:
    text: str
    dropped_imports: list[str] = field(default_factory=list)
    stripped_options: int = 0


def sanitize(
    source: str,
    *,
    keep_import: Callable[[str], bool] | None = None,
    import_prefixes: Sequence[tuple[str, str]] = (),
    strip_custom_options: bool = True,
) -> SanitizeResult:
    """Return source with imports rewritten/dropped and custom options removed.

    keep_import is a callable taking the (rewritten) import path and returning
    False to drop the import; None keeps every import.
    """
    tokens = tokenize(source)
    edits: list[tuple[int, int, str]] = []
    result = SanitizeResult(text="")
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1].text if i + 1 < len(tokens) else ""
        if tok.text == "import" and (nxt in ("weak", "public") or nxt[:1] in ('"', "'")):
            end = _statement_end(tokens, i)
            strings = [t for t in tokens[i + 1 : end] if t.text[:1] in "\"'"]
            if len(strings) != 1:
                raise ValueError(f"cannot parse import at offset {tok.start}")
            path = _unquote(strings[0].text)
            for old, new in import_prefixes:
                if path.startswith(old):
                    path = new + path[len(old) :]
                    break
            if keep_import is not None and not keep_import(path):
                result.dropped_imports.append(path)
                edits.append((tok.start, tokens[end].end, ""))
            elif path != _unquote(strings[0].text):
                edits.append((strings[0].start, strings[0].end, f'"{path}"'))
            i = end + 1
            continue
        if strip_custom_options and tok.text == "option" and nxt == "(":
            end = _statement_end(tokens, i)
            edits.append((tok.start, tokens[end].end, ""))
            result.stripped_options += 1
            i = end + 1
            continue
        if strip_custom_options and tok.text == "[":
            end = _bracket_end(tokens, i)
            entries = _split_entries(tokens, i + 1, end)
            kept = [(a, b) for a, b in entries if tokens[a].text != "("]
            if len(kept) != len(entries):
                result.stripped_options += len(entries) - len(kept)
                if kept:
                    body = ", ".join(source[tokens[a].start : tokens[b].end] for a, b in kept)
                    edits.append((tok.start, tokens[end].end, f"[{body}]"))
                else:
                    # Take the blank before the bracket too: "x = 1 [(a) = b];" -> "x = 1;".
                    start = tokens[i - 1].end if i > 0 else tok.start
                    edits.append((start, tokens[end].end, ""))
            i = end + 1
            continue
        i += 1
    text = source
    for start, end, repl in sorted(edits, reverse=True):
        text = text[:start] + repl + text[end:]
    result.text = text
    return result


# ---------------------------------------------------------------------------
# Compiling


class CompileError(Exception):
    """protoc or git failed, or an input directory is missing."""


def _protoc_include() -> Path:
    import grpc_tools

    return Path(grpc_tools.__file__).parent / "_proto"


def compile_set(roots: Sequence[Path], files: Sequence[str], out: Path) -> descriptor_pb2.FileDescriptorSet:
    """Compile files (relative to one of roots) into a FileDescriptorSet."""
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        *[f"-I{r}" for r in roots],
        f"-I{_protoc_include()}",
        f"--descriptor_set_out={out}",
        "--include_imports",
        *files,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CompileError(f"protoc failed ({' '.join(cmd)}):\n{proc.stderr.strip()}")
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _list_protos(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.proto"))


def export_git_protos(gitdir: str, rev: str, dest: Path) -> None:
    """Write every .proto file of gitdir at rev under dest."""
    proc = subprocess.run(
        ["git", "-C", gitdir, "archive", "--format=tar", rev], capture_output=True, check=False
    )
    if proc.returncode != 0:
        raise CompileError(f"git archive {rev} in {gitdir} failed: {proc.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        for member in tar.getmembers():
            if not member.isfile() or not member.name.endswith(".proto"):
                continue
            target = dest / member.name
            if not target.resolve().is_relative_to(dest.resolve()):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            extracted = tar.extractfile(member)
            assert extracted is not None
            target.write_bytes(extracted.read())


def git_rev(gitdir: str, rev: str) -> str:
    proc = subprocess.run(
        ["git", "-C", gitdir, "rev-parse", "--verify", rev + "^{commit}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise CompileError(f"unknown revision {rev!r} in {gitdir}")
    return proc.stdout.strip()


def sanitize_tree(
    sources: Sequence[Path],
    dest: Path,
    *,
    import_prefixes: Sequence[tuple[str, str]],
    drop_globs: Sequence[str],
    strip_custom_options: bool,
) -> tuple[list[Path], list[str]]:
    """Copy the .proto files of each source root to dest/<n>, sanitised.

    Returns the new roots and human-readable notes.
    """
    roots = [dest / f"root{n}" for n in range(len(sources))]
    copies: list[tuple[Path, str]] = []
    available: set[str] = set()
    for src, root in zip(sources, roots, strict=True):
        root.mkdir(parents=True)
        for rel in _list_protos(src):
            copies.append((root / rel, (src / rel).read_text()))
            available.add(rel)
    wkt = _protoc_include()

    def keep(path: str) -> bool:
        if any(fnmatch.fnmatchcase(path, g) for g in drop_globs):
            return False
        return path in available or (wkt / path).is_file()

    notes: list[str] = []
    for path, text in copies:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            res = sanitize(
                text,
                keep_import=keep,
                import_prefixes=import_prefixes,
                strip_custom_options=strip_custom_options,
            )
        except ValueError as exc:
            # Only matters if the file is compiled; protoc will then say what is wrong.
            notes.append(f"note: left {path.relative_to(dest)} as is: {exc}")
            path.write_text(text)
            continue
        path.write_text(res.text)
        for imp in res.dropped_imports:
            notes.append(f"note: dropped import {imp!r} from {path.relative_to(dest)}")
    return roots, notes


# ---------------------------------------------------------------------------
# Comparing


@dataclass
class Surface:
    """What is on the wire, keyed by full name (no leading dot)."""

    messages: dict[str, dict[str, dict[str, object]]] = field(default_factory=dict)
    enums: dict[str, dict[str, int]] = field(default_factory=dict)
    services: dict[str, dict[str, dict[str, object]]] = field(default_factory=dict)
    message_attrs: dict[str, dict[str, object]] = field(default_factory=dict)


def _package_selected(package: str, only: Sequence[str]) -> bool:
    return not only or any(package == p or package.startswith(p + ".") for p in only)


def _field_info(
    f: descriptor_pb2.FieldDescriptorProto, msg: descriptor_pb2.DescriptorProto
) -> dict[str, object]:
    oneof = None
    if f.HasField("oneof_index") and not f.proto3_optional:
        oneof = msg.oneof_decl[f.oneof_index].name
    return {
        "number": f.number,
        "type": FDP.Type.Name(f.type),
        "type_name": f.type_name or None,
        "label": FDP.Label.Name(f.label),
        "oneof": oneof,
        "proto3_optional": f.proto3_optional,
        "packed": f.options.packed if f.options.HasField("packed") else None,
        "default": f.default_value if f.HasField("default_value") else None,
    }


def _walk_messages(
    prefix: str, messages: Iterable[descriptor_pb2.DescriptorProto]
) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
    for m in messages:
        name = f"{prefix}.{m.name}" if prefix else m.name
        yield name, m
        yield from _walk_messages(name, m.nested_type)


def surface_of(
    fds: descriptor_pb2.FileDescriptorSet, files: Sequence[str] | None, only_packages: Sequence[str]
) -> Surface:
    """Collect the surface of the files named (all files when None)."""
    s = Surface()
    wanted = None if files is None else set(files)
    for fd in fds.file:
        if wanted is not None and fd.name not in wanted:
            continue
        if not _package_selected(fd.package, only_packages):
            continue
        syntax = fd.syntax or "proto2"
        for name, m in _walk_messages(fd.package, fd.message_type):
            s.message_attrs[name] = {"syntax": syntax, "map_entry": m.options.map_entry}
            s.messages[name] = {f.name: _field_info(f, m) for f in m.field}
            for e in m.enum_type:
                s.enums[f"{name}.{e.name}"] = {v.name: v.number for v in e.value}
        for e in fd.enum_type:
            full = f"{fd.package}.{e.name}" if fd.package else e.name
            s.enums[full] = {v.name: v.number for v in e.value}
        for svc in fd.service:
            full = f"{fd.package}.{svc.name}" if fd.package else svc.name
            s.services[full] = {
                m.name: {
                    "input_type": m.input_type,
                    "output_type": m.output_type,
                    "client_streaming": m.client_streaming,
                    "server_streaming": m.server_streaming,
                }
                for m in svc.method
            }
    return s


def _diff_attrs(what: str, ours: Mapping[str, object], theirs: Mapping[str, object]) -> list[str]:
    out = []
    for key in sorted(set(ours) | set(theirs)):
        if ours.get(key) != theirs.get(key):
            out.append(f"changed {what}: {key} ours={ours.get(key)!r} upstream={theirs.get(key)!r}")
    return out


def _diff_keyed(
    kind: str, prefix: str, ours: Mapping[str, object], theirs: Mapping[str, object]
) -> list[str]:
    out = []
    for name in sorted(set(theirs) - set(ours)):
        out.append(f"missing {kind} {prefix}{name}")
    for name in sorted(set(ours) - set(theirs)):
        out.append(f"extra {kind} {prefix}{name}")
    return out


def compare(ours: Surface, theirs: Surface) -> list[str]:
    """All differences, one line each, in a stable order."""
    diffs = _diff_keyed("message", "", ours.messages, theirs.messages)
    for name in sorted(set(ours.messages) & set(theirs.messages)):
        diffs += _diff_attrs(f"message {name}", ours.message_attrs[name], theirs.message_attrs[name])
        of, tf = ours.messages[name], theirs.messages[name]
        diffs += _diff_keyed("field", f"{name}.", of, tf)
        for fname in sorted(set(of) & set(tf)):
            diffs += _diff_attrs(f"field {name}.{fname}", of[fname], tf[fname])
    diffs += _diff_keyed("enum", "", ours.enums, theirs.enums)
    for name in sorted(set(ours.enums) & set(theirs.enums)):
        ov, tv = ours.enums[name], theirs.enums[name]
        diffs += _diff_keyed("enum value", f"{name}.", ov, tv)
        for vname in sorted(set(ov) & set(tv)):
            if ov[vname] != tv[vname]:
                diffs.append(f"changed enum value {name}.{vname}: ours={ov[vname]} upstream={tv[vname]}")
    diffs += _diff_keyed("service", "", ours.services, theirs.services)
    for name in sorted(set(ours.services) & set(theirs.services)):
        om, tm = ours.services[name], theirs.services[name]
        diffs += _diff_keyed("method", f"{name}.", om, tm)
        for mname in sorted(set(om) & set(tm)):
            diffs += _diff_attrs(f"method {name}.{mname}", om[mname], tm[mname])
    return diffs


# ---------------------------------------------------------------------------
# Command line


def _prefix_pair(text: str) -> tuple[str, str]:
    old, sep, new = text.partition("=")
    if not sep or not old:
        raise argparse.ArgumentTypeError(f"expected OLD=NEW, got {text!r}")
    return old, new


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Compare the wire surface (messages, enums, services) of two proto trees.",
        epilog="Exit status: 0 no differences, 1 differences, 2 error.",
    )
    p.add_argument("--ours", required=True, type=Path, help="root of our proto tree (an include path)")
    p.add_argument(
        "--ours-file", action="append", default=[], help="file under --ours to compare (repeatable)"
    )
    p.add_argument(
        "--ours-include", action="append", default=[], type=Path, help="extra include path for ours"
    )
    p.add_argument("--theirs", required=True, help="root of the upstream tree (inside --theirs-git if given)")
    p.add_argument(
        "--theirs-file", action="append", default=[], help="file under --theirs to compare (repeatable)"
    )
    p.add_argument("--theirs-include", action="append", default=[], help="extra include path for upstream")
    p.add_argument("--theirs-git", help="read the upstream tree from this git repository (bare is fine)")
    p.add_argument("--theirs-rev", default="HEAD", help="revision for --theirs-git (default HEAD)")
    p.add_argument(
        "--theirs-import-prefix",
        action="append",
        default=[],
        type=_prefix_pair,
        metavar="OLD=NEW",
        help="rewrite upstream import paths starting with OLD (repeatable)",
    )
    p.add_argument("--drop-import", action="append", default=[], help="glob of upstream imports to drop")
    p.add_argument("--keep-custom-options", action="store_true", help="do not strip upstream custom options")
    p.add_argument(
        "--only-package", action="append", default=[], help="compare only this package (and sub-packages)"
    )
    p.add_argument("--all-files", action="store_true", help="compare imported files' definitions too")
    p.add_argument("-q", "--quiet", action="store_true", help="no notes, only differences")
    return p


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="compare-protos-") as tmp_name:
        tmp = Path(tmp_name)
        notes: list[str] = []

        if args.theirs_git:
            commit = git_rev(args.theirs_git, args.theirs_rev)
            notes.append(f"note: upstream {args.theirs_git} at {commit}")
            export = tmp / "export"
            export.mkdir()
            export_git_protos(args.theirs_git, commit, export)
            base = export
        else:
            base = Path(".")
        theirs_sources = [base / args.theirs, *(base / inc for inc in args.theirs_include)]
        for src in theirs_sources:
            if not src.is_dir():
                raise CompileError(f"upstream directory {src} does not exist")
        theirs_roots, sanitize_notes = sanitize_tree(
            theirs_sources,
            tmp / "theirs",
            import_prefixes=args.theirs_import_prefix,
            drop_globs=args.drop_import,
            strip_custom_options=not args.keep_custom_options,
        )
        notes += sanitize_notes

        ours_files = args.ours_file or _list_protos(args.ours)
        theirs_files = args.theirs_file or _list_protos(theirs_sources[0])
        ours_fds = compile_set([args.ours, *args.ours_include], ours_files, tmp / "ours.pb")
        theirs_fds = compile_set(theirs_roots, theirs_files, tmp / "theirs.pb")

    ours = surface_of(ours_fds, None if args.all_files else ours_files, args.only_package)
    theirs = surface_of(theirs_fds, None if args.all_files else theirs_files, args.only_package)
    diffs = compare(ours, theirs)
    if not args.quiet:
        for note in notes:
            print(note, file=sys.stderr)
    for line in diffs:
        print(line)
    counts = f"{len(theirs.messages)} messages, {len(theirs.enums)} enums, {len(theirs.services)} services"
    print(f"{counts} upstream; {len(diffs)} difference(s)", file=sys.stderr)
    if not theirs.messages and not theirs.enums and not theirs.services:
        print("error: nothing selected upstream (check --theirs-file / --only-package)", file=sys.stderr)
        return 2
    return 1 if diffs else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (CompileError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
