"""The embedded store keeps admin tokens and the audit log in its data file."""

from __future__ import annotations

from pathlib import Path

from lunos_proxy.store import AdminTokenRecord, AuditRecord
from lunos_proxy.store.memory import MemoryStore


async def test_admin_tokens_and_audit_survive_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "store.json")
    token = AdminTokenRecord(id="tok-1", hash="h", prefix="lat-abcdef", name="ops", scope="operator", created=1.5)
    record = AuditRecord(id="aud-1", time=2.5, actor="tok-1", action="accounts.create", target="acc-1",
                         account_id="acc-1", status=201, result="ok")
    first = MemoryStore(path)
    await first.start()
    await first.put_admin_token(token)
    await first.add_audit(record)
    await first.close()
    second = MemoryStore(path)
    await second.start()
    assert await second.admin_tokens() == [token]
    assert await second.audit() == [record]
    await second.close()
