"""Registry error responses → errdefs errors with the registry's own words in them."""

from __future__ import annotations

import json

from arun import errdefs

__all__ = ["error_for_status", "parse_error_body"]


def parse_error_body(body: bytes, content_type: str = "") -> str:
    """The ``errors`` of a distribution API error body as one line; for anything else (an
    HTML page, plain text) a short, printable excerpt."""
    text = body[:4096]
    if text.lstrip().startswith(b"{"):
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("errors"), list):
            parts = []
            for e in doc["errors"]:
                if not isinstance(e, dict):
                    continue
                code, msg = str(e.get("code", "")), str(e.get("message", ""))
                detail = e.get("detail")
                item = f"{code}: {msg}" if code else msg
                if detail:
                    item += f" ({json.dumps(detail)[:200]})"
                parts.append(item)
            if parts:
                return "; ".join(parts)
    snippet = text[:200].decode(errors="replace")
    snippet = " ".join(snippet.split())
    if "html" in content_type.lower():
        return f"unexpected HTML response: {snippet!r}"
    return snippet


def error_for_status(status: int, what: str, body: bytes = b"", content_type: str = "") -> errdefs.ArunError:
    """The error for a non-success ``status`` on ``what`` (e.g. ``GET …/manifests/latest``)."""
    detail = parse_error_body(body, content_type) if body else ""
    msg = f"{what}: unexpected status {status}"
    if detail:
        msg += f": {detail}"
    if status == 401:
        return errdefs.UnauthenticatedError(msg)
    if status == 403:
        return errdefs.PermissionDeniedError(msg)
    if status == 404:
        return errdefs.NotFoundError(msg)
    if status == 416:
        return errdefs.OutOfRangeError(msg)
    if status in (408, 429) or status >= 500:
        return errdefs.UnavailableError(msg)
    if status in (400, 405, 411, 413, 415):
        return errdefs.InvalidArgumentError(msg)
    return errdefs.UnknownError(msg)
