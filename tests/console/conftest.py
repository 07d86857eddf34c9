from tests.console.support import browsers, mailbox  # noqa: F401  (fixtures)
