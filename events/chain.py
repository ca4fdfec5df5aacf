"""The per-stream SHA-256 hash chain: each event's hash covers its content and the previous hash.

Editing or deleting any stored event (after dropping the triggers, say) breaks the chain at that
event, which :func:`verify_rows` reports.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

GENESIS = "0" * 64


def event_hash(
    prev_hash: str,
    *,
    stream: str,
    version: int,
    type_name: str,
    type_version: int,
    data: str,
    metadata: str,
    recorded_at: str,
    workspace_id: str,
    key: bytes | None = None,
) -> str:
    """SHA-256 over the length-prefixed parts; with ``key`` an HMAC, so that someone who can write
    to the database but does not hold the secret key cannot forge a consistent chain."""
    chunks = []
    for part in (prev_hash, stream, str(version), type_name, str(type_version), data, metadata,
                 recorded_at, workspace_id):
        encoded = part.encode("utf-8")
        chunks.append(len(encoded).to_bytes(8, "big"))
        chunks.append(encoded)
    payload = b"".join(chunks)
    if key is not None:
        return hmac.new(key, payload, hashlib.sha256).hexdigest()
    return hashlib.sha256(payload).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """The first bad event found: where and why."""

    position: int | None
    stream: str
    version: int | None
    problem: str


def verify_rows(rows: Iterable[dict[str, object]], stream_heads: dict[str, tuple[int, str]],
                key: bytes | None = None) -> ChainProblem | None:
    """Check rows ordered by (stream, version): versions 1..n without gaps, and every hash.

    ``stream_heads`` maps stream -> (version, last hash) from the streams table, so a deleted last
    event is found too.
    """
    current: str | None = None
    expected_version = 0
    prev = GENESIS
    seen: set[str] = set()
    for row in rows:
        stream = str(row["stream"])
        if stream != current:
            if current is not None:
                problem = _check_head(current, expected_version, prev, stream_heads)
                if problem:
                    return problem
            current, expected_version, prev = stream, 0, GENESIS
            seen.add(stream)
        expected_version += 1
        position = int(row["position"])  # type: ignore[call-overload]
        version = int(row["version"])  # type: ignore[call-overload]
        if version != expected_version:
            return ChainProblem(position, stream, version,
                                f"version {version} where {expected_version} was expected (missing event)")
        computed = event_hash(
            prev, stream=stream, version=version, type_name=str(row["type"]),
            type_version=int(row["type_version"]),  # type: ignore[call-overload]
            data=str(row["data"]), metadata=str(row["metadata"]), recorded_at=str(row["recorded_at"]),
            workspace_id=str(row["workspace_id"]), key=key,
        )
        if computed != row["hash"]:
            return ChainProblem(position, stream, version, "hash mismatch: the event was altered")
        prev = computed
    if current is not None:
        problem = _check_head(current, expected_version, prev, stream_heads)
        if problem:
            return problem
    for stream, (version, _) in sorted(stream_heads.items()):
        if stream not in seen and version > 0:
            return ChainProblem(None, stream, 1, "every event of the stream is missing")
    return None


def _check_head(stream: str, version: int, last_hash: str,
                heads: dict[str, tuple[int, str]]) -> ChainProblem | None:
    head = heads.get(stream)
    if head is None:
        return None
    if head[0] != version:
        return ChainProblem(None, stream, version + 1,
                            f"stream ends at version {version} but {head[0]} were appended (deleted events)")
    if head[1] != last_hash:
        return ChainProblem(None, stream, version, "last hash differs from the recorded head")
    return None
