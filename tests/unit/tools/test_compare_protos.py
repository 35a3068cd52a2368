"""tools/compare_protos.py: sanitising upstream sources and reporting wire differences."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

TOOL = Path(__file__).resolve().parents[3] / "tools" / "compare_protos.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compare_protos", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_protos"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


cp = _load()

# Upstream-style source: a gogo import, file/field/enum-value custom options, an
# import rooted at a Go module path, and a standard option that must survive.
THEIRS_API = """\
syntax = "proto3";
package demo.v1;
import "github.com/gogo/protobuf/gogoproto/gogo.proto";
import weak "gogoproto/more.proto";
import "example.com/demo/api/types/thing.proto";
option (gogoproto.marshaler_all) = true;
option (gogoproto.goproto_stringer_all) = {
  a: 1; b: [2, 3]
};
option go_package = "example.com/demo/api/v1;demo";

service Demo {
  rpc Get(GetRequest) returns (GetResponse) {
    option (google.api.http) = { get: "/v1/{id}" };
  }
  rpc Watch(GetRequest) returns (stream demo.types.Thing);
}

message GetRequest {
  string id = 1 [(gogoproto.customname) = "ID", deprecated = true];
  map<string, string> labels = 2 [(gogoproto.nullable) = false];
  oneof pick {
    int64 a = 3;
    string b = 4 [(gogoproto.moretags) = "x,y"];
  }
  optional bool flag = 5;
  // an [ignored] bracket and an import "x.proto" in a comment
}

message GetResponse {
  demo.types.Thing thing = 1;
  enum Kind {
    KIND_A = 0 [(gogoproto.enumvalue_customname) = "A"];
    KIND_B = 1;
  }
  repeated Kind kinds = 2;
}
"""

THEIRS_THING = """\
syntax = "proto3";
package demo.types;
message Thing { string name = 1; }
"""

OURS_API = """\
syntax = "proto3";
package demo.v1;
import "types/thing.proto";

service Demo {
  rpc Get(GetRequest) returns (GetResponse) {}
  rpc Watch(GetRequest) returns (stream demo.types.Thing) {}
}

message GetRequest {
  string id = 1 [deprecated = true];
  map<string, string> labels = 2;
  oneof pick {
    int64 a = 3;
    string b = 4;
  }
  optional bool flag = 5;
}

message GetResponse {
  demo.types.Thing thing = 1;
  enum Kind {
    KIND_A = 0;
    KIND_B = 1;
  }
  repeated Kind kinds = 2;
}
"""


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    ours = _write(tmp_path / "ours", {"demo/v1/api.proto": OURS_API, "types/thing.proto": THEIRS_THING})
    theirs = _write(
        tmp_path / "theirs", {"api/v1/api.proto": THEIRS_API, "api/types/thing.proto": THEIRS_THING}
    )
    return ours, theirs


def _run(ours: Path, theirs: Path, *extra: str) -> int:
    return int(
        cp.main(
            [
                "--ours",
                str(ours),
                "--ours-file",
                "demo/v1/api.proto",
                "--theirs",
                str(theirs),
                "--theirs-file",
                "api/v1/api.proto",
                "--theirs-import-prefix",
                "example.com/demo/=",
                *extra,
            ]
        )
    )


def test_sanitize_strips_custom_options_and_keeps_standard_ones() -> None:
    res = cp.sanitize(
        THEIRS_API,
        keep_import=lambda path: path == "api/types/thing.proto",
        import_prefixes=[("example.com/demo/", "")],
    )
    text = res.text
    assert "gogoproto" not in text
    assert "google.api.http" not in text
    assert 'import "api/types/thing.proto";' in text
    assert res.dropped_imports == ["github.com/gogo/protobuf/gogoproto/gogo.proto", "gogoproto/more.proto"]
    assert "string id = 1 [deprecated = true];" in text
    assert "map<string, string> labels = 2;" in text
    assert "KIND_A = 0;" in text
    assert 'option go_package = "example.com/demo/api/v1;demo";' in text
    # Comments are left alone.
    assert 'an [ignored] bracket and an import "x.proto" in a comment' in text
    assert res.stripped_options == 7


def test_sanitize_leaves_fields_named_like_keywords() -> None:
    src = 'syntax = "proto3";\nmessage M { string import = 1; string option = 2 [json_name = "o"]; }\n'
    assert cp.sanitize(src, keep_import=lambda _: False).text == src


def test_identical_wire_has_no_differences(
    trees: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ours, theirs = trees
    assert _run(ours, theirs) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "0 difference(s)" in err
    assert "dropped import 'github.com/gogo/protobuf/gogoproto/gogo.proto'" in err


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("int64 a = 3;", "int64 a = 7;", "changed field demo.v1.GetRequest.a: number ours=7 upstream=3"),
        ("int64 a = 3;", "uint64 a = 3;", "changed field demo.v1.GetRequest.a: type ours='TYPE_UINT64'"),
        (
            "  oneof pick {\n    int64 a = 3;\n    string b = 4;\n  }",
            "  int64 a = 3;\n  string b = 4;",
            "changed field demo.v1.GetRequest.a: oneof ours=None upstream='pick'",
        ),
        (
            "optional bool flag = 5;",
            "bool flag = 5;",
            "changed field demo.v1.GetRequest.flag: proto3_optional",
        ),
        (
            "map<string, string> labels = 2;",
            "repeated string labels = 2;",
            "changed field demo.v1.GetRequest.labels",
        ),
        (
            "KIND_B = 1;",
            "KIND_B = 2;",
            "changed enum value demo.v1.GetResponse.Kind.KIND_B: ours=2 upstream=1",
        ),
        ("KIND_B = 1;", "KIND_B = 1;\n    KIND_C = 2;", "extra enum value demo.v1.GetResponse.Kind.KIND_C"),
        ("  repeated Kind kinds = 2;\n", "", "missing field demo.v1.GetResponse.kinds"),
        (
            "returns (stream demo.types.Thing)",
            "returns (demo.types.Thing)",
            "changed method demo.v1.Demo.Watch: server_streaming ours=False upstream=True",
        ),
        (
            "rpc Get(GetRequest)",
            "rpc Get(stream GetRequest)",
            "changed method demo.v1.Demo.Get: client_streaming ours=True upstream=False",
        ),
        ("rpc Get(GetRequest) returns (GetResponse) {}\n", "", "missing method demo.v1.Demo.Get"),
        ("message GetRequest {", "message Extra {}\nmessage GetRequest {", "extra message demo.v1.Extra"),
        (
            "returns (GetResponse) {}",
            "returns (GetRequest) {}",
            "changed method demo.v1.Demo.Get: output_type",
        ),
    ],
)
def test_differences_are_reported(
    trees: tuple[Path, Path], capsys: pytest.CaptureFixture[str], old: str, new: str, expected: str
) -> None:
    ours, theirs = trees
    api = ours / "demo/v1/api.proto"
    assert old in api.read_text()
    api.write_text(api.read_text().replace(old, new, 1))
    assert _run(ours, theirs) == 1
    out = capsys.readouterr().out
    assert expected in out, out


def test_only_package_filters(trees: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    ours, theirs = trees
    api = ours / "demo/v1/api.proto"
    api.write_text(api.read_text().replace("int64 a = 3;", "int64 a = 9;"))
    assert _run(ours, theirs, "--only-package", "demo") == 1
    # Nothing upstream is left to compare under an unrelated package: that is an error, not a pass.
    assert _run(ours, theirs, "--only-package", "other") == 2
    capsys.readouterr()


def test_all_files_includes_imports(trees: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    ours, theirs = trees
    (ours / "types/thing.proto").write_text(THEIRS_THING.replace("name = 1", "name = 2"))
    assert _run(ours, theirs) == 0
    assert _run(ours, theirs, "--all-files") == 1
    assert "changed field demo.types.Thing.name: number ours=2 upstream=1" in capsys.readouterr().out


def test_compile_error_is_exit_2(trees: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    ours, theirs = trees
    (ours / "demo/v1/api.proto").write_text("syntax = 'proto3'; message {")
    assert _run(ours, theirs) == 2
    assert "protoc failed" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_reads_upstream_from_git(
    trees: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ours, theirs = trees
    repo = tmp_path / "repo"
    shutil.copytree(theirs, repo)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "v1"], check=True)
    (repo / "api/v1/api.proto").write_text(THEIRS_API.replace("int64 a = 3;", "int64 a = 6;"))
    subprocess.run([*git, "commit", "-qam", "v2"], check=True)

    def run(rev: str) -> int:
        return int(
            cp.main(
                [
                    "--ours", str(ours), "--ours-file", "demo/v1/api.proto",
                    "--theirs-git", str(repo), "--theirs-rev", rev,
                    "--theirs", ".", "--theirs-file", "api/v1/api.proto",
                    "--theirs-import-prefix", "example.com/demo/=",
                ]
            )
        )  # fmt: skip

    assert run("HEAD~1") == 0
    assert run("HEAD") == 1
    assert "changed field demo.v1.GetRequest.a: number ours=3 upstream=6" in capsys.readouterr().out
