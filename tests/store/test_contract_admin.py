"""The store contract for admin tokens and the audit log (every backend, same outcomes)."""

from __future__ import annotations

from lunos_proxy.store import AdminTokenRecord, AuditRecord
from tests.store.backends import Backend


def token(token_id: str, token_hash: str, scope: str = "read") -> AdminTokenRecord:
    return AdminTokenRecord(id=token_id, hash=token_hash, prefix="lat-abcdef", name=f"n-{token_id}",
                            scope=scope, created=1_700_000_000.5)


def entry(n: int, account_id: str = "", target: str = "") -> AuditRecord:
    return AuditRecord(id=f"aud-{n}", time=1_700_000_000.0 + n, actor="tok-1", action="accounts.update",
                       target=target, account_id=account_id, status=200, result="ok")


async def test_admin_tokens_are_found_by_hash_listed_by_id_and_deleted(backend: Backend):
    s = backend.store
    t2, t1 = token("tok-2", "h2", "full"), token("tok-1", "h1")
    await s.put_admin_token(t2)
    await s.put_admin_token(t1)
    assert await s.admin_token_by_hash("h2") == t2
    assert await s.admin_token_by_hash("nope") is None
    assert await s.admin_tokens() == [t1, t2]
    assert await s.delete_admin_token("tok-2") is True
    assert await s.delete_admin_token("tok-2") is False
    assert await s.admin_token_by_hash("h2") is None
    assert await s.admin_tokens() == [t1]


async def test_audit_lists_newest_first_filtered_by_account_and_limited(backend: Backend):
    s = backend.store
    records = [entry(1, "acc-a", "acc-a"), entry(2, "acc-b"), entry(3, "acc-a", "key-1"), entry(4)]
    for r in records:
        await s.add_audit(r)
    assert await s.audit() == records[::-1]
    assert await s.audit(limit=2) == [records[3], records[2]]
    assert await s.audit("acc-a") == [records[2], records[0]]
    assert await s.audit("acc-a", limit=1) == [records[2]]
    assert await s.audit("acc-") == []  # an id is matched whole, not as a prefix


async def test_rekeying_audit_moves_an_accounts_records_to_a_pseudonym(backend: Backend):
    s = backend.store
    for r in (entry(1, "acc-a", "acc-a"), entry(2, "acc-b", "acc-b"), entry(3, "acc-a", "key-1")):
        await s.add_audit(r)
    assert await s.rekey_audit("acc-a", "anon-9") == 2
    assert await s.audit("acc-a") == []
    assert [(r.id, r.account_id, r.target) for r in await s.audit("anon-9")] == [
        ("aud-3", "anon-9", "key-1"), ("aud-1", "anon-9", "anon-9")]
    assert [(r.id, r.time) for r in await s.audit("acc-b")] == [("aud-2", 1_700_000_002.0)]
    assert await s.rekey_audit("acc-a", "anon-9") == 0
