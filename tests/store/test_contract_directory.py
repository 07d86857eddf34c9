"""The store contract for the directory (`store.directory.Directory`): keys,
accounts, admin tokens and the audit log (every backend, same outcomes)."""

from __future__ import annotations

from lunos_proxy.store import AdminTokenRecord, AuditRecord
from tests.store.backends import Backend
from tests.store.samples import make_account, make_key


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


# -- keys ---------------------------------------------------------------------


async def test_keys_are_found_by_hash_id_and_account(backend: Backend):
    s = backend.store
    k1, k2 = make_key("key-1", "h1"), make_key("key-2", "h2", expires=1_800_000_000.5)
    other = make_key("key-3", "h3", account_id="acct-2")
    for k in (k2, other, k1):
        await s.put_key(k)
    assert await s.key_by_hash("h1") == k1
    assert await s.key_by_id("key-2") == k2
    assert await s.keys_of("acct-1") == [k1, k2]
    assert await s.keys_of("acct-2") == [other]
    assert await s.key_by_hash("nope") is None
    assert await s.key_by_id("nope") is None
    assert await s.keys_of("nobody") == []


async def test_replacing_a_key_moves_its_hash_index_and_account(backend: Backend):
    s = backend.store
    await s.put_key(make_key("key-1", "h-old"))
    rotated = make_key("key-1", "h-new", account_id="acct-2", revoked=True)
    await s.put_key(rotated)
    assert await s.key_by_hash("h-old") is None
    assert await s.key_by_hash("h-new") == rotated
    assert await s.key_by_id("key-1") == rotated
    assert await s.keys_of("acct-1") == []
    assert await s.keys_of("acct-2") == [rotated]


async def test_deleting_a_key_removes_every_way_to_find_it(backend: Backend):
    s = backend.store
    await s.put_key(make_key("key-1", "h1"))
    await s.put_key(make_key("key-2", "h2"))
    await s.delete_key("key-1")
    await s.delete_key("never-existed")
    assert await s.key_by_hash("h1") is None
    assert await s.key_by_id("key-1") is None
    assert [k.id for k in await s.keys_of("acct-1")] == ["key-2"]


async def test_a_returned_key_is_a_copy(backend: Backend):
    s = backend.store
    await s.put_key(make_key("key-1", "h1"))
    got = await s.key_by_hash("h1")
    assert got is not None
    got.revoked = True
    assert got.allowed_models is not None
    got.allowed_models.append("everything")
    assert await s.key_by_hash("h1") == make_key("key-1", "h1")


# -- accounts -----------------------------------------------------------------


async def test_accounts_are_found_by_id_index_and_listed_by_id(backend: Backend):
    s = backend.store
    a1, a2, a3 = make_account("a-1", "ix-1"), make_account("a-2", "ix-2"), make_account("a-3")
    for a in (a3, a1, a2):
        await s.put_account(a)
    assert await s.account("a-2") == a2
    assert await s.account_by_index("ix-1") == a1
    assert await s.account_by_index("") is None
    assert await s.account_by_index("ix-9") is None
    assert await s.account("a-9") is None
    assert await s.accounts() == [a1, a2, a3]


async def test_account_index_follows_a_replace_and_a_delete(backend: Backend):
    s = backend.store
    await s.put_account(make_account("a-1", "ix-old"))
    await s.put_account(make_account("a-2", "ix-2"))
    moved = make_account("a-1", "ix-new", plan="team")
    await s.put_account(moved)
    assert await s.account_by_index("ix-old") is None
    assert await s.account_by_index("ix-new") == moved
    await s.delete_account("a-2")
    await s.delete_account("a-9")
    assert await s.account("a-2") is None
    assert await s.account_by_index("ix-2") is None
    assert await s.accounts() == [moved]


async def test_an_update_writes_over_an_account_and_never_brings_back_an_erased_one(
    backend: Backend,
):
    s = backend.store
    await s.put_account(make_account("a-1", "ix-1"))
    changed = make_account("a-1", "ix-1", plan="team")
    assert await s.update_account(changed)
    assert await s.account("a-1") == changed
    await s.delete_account("a-1")
    assert not await s.update_account(make_account("a-1", "ix-1", plan="late"))
    assert await s.account("a-1") is None
    assert await s.account_by_index("ix-1") is None
    assert await s.accounts() == []
