from __future__ import annotations

import base64

import pytest

from arun.errdefs import InvalidArgumentError
from arun.remotes.auth import (
    AuthConfig,
    Challenge,
    StaticCredentials,
    _merge_scopes,
    credentials_from_auth_config,
    parse_auth_config,
    parse_challenges,
)


def test_parse_bearer_challenge() -> None:
    [c] = parse_challenges(
        [
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull"'
        ]
    )
    assert c == Challenge(
        "bearer",
        {
            "realm": "https://auth.docker.io/token",
            "service": "registry.docker.io",
            "scope": "repository:a/b:pull",
        },
    )


def test_parse_several_and_escapes() -> None:
    cs = parse_challenges(
        [
            'Basic realm="simple", Bearer realm="https://x/t", error="insufficient_scope"',
            'Bearer realm="a \\"quoted\\" realm" , service=plain',
        ]
    )
    assert [c.scheme for c in cs] == ["basic", "bearer", "bearer"]
    assert cs[1].params == {"realm": "https://x/t", "error": "insufficient_scope"}
    assert cs[2].params == {"realm": 'a "quoted" realm', "service": "plain"}


def test_parse_garbage_is_ignored() -> None:
    assert parse_challenges([""]) == []
    [c] = parse_challenges(["Negotiate"])
    assert c.scheme == "negotiate" and not c.params


def test_merge_scopes() -> None:
    assert _merge_scopes(["repository:a:pull"], ["repository:a:push", "repository:b:pull"]) == (
        "repository:a:pull,push",
        "repository:b:pull",
    )
    assert _merge_scopes(["registry:catalog:*"], []) == ("registry:catalog:*",)


def test_parse_auth_config() -> None:
    assert parse_auth_config(None, "h") == ("", "")
    assert parse_auth_config(AuthConfig(username="u", password="p"), "h") == ("u", "p")
    assert parse_auth_config(AuthConfig(identity_token="tok"), "h") == ("", "tok")
    enc = base64.b64encode(b"user:pa:ss\x00").decode()
    assert parse_auth_config(AuthConfig(auth=enc), "h") == ("user", "pa:ss")
    # A server address that is not this host: no credentials.
    assert parse_auth_config(AuthConfig(username="u", password="p", server_address="https://other"), "h") == (
        "",
        "",
    )
    assert parse_auth_config(AuthConfig(username="u", password="p", server_address="https://h"), "h") == (
        "u",
        "p",
    )
    with pytest.raises(InvalidArgumentError):
        parse_auth_config(AuthConfig(auth=base64.b64encode(b"nocolon").decode()), "h")
    with pytest.raises(InvalidArgumentError):
        parse_auth_config(AuthConfig(auth="!!!notbase64"), "h")


def test_credentials_helpers() -> None:
    creds = credentials_from_auth_config(None, {"h": AuthConfig(username="a", password="b")})
    assert creds("h") == ("a", "b")
    assert creds("other") == ("", "")
    assert credentials_from_auth_config(AuthConfig(username="x", password="y"))("any") == ("x", "y")
    static = StaticCredentials({"h": ("u", "p"), "*": ("d", "e")})
    assert static("h") == ("u", "p")
    assert static("z") == ("d", "e")
