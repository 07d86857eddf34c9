"""The account console: a small server-rendered web app for account holders.

Served by the proxy's public listener under ``/console`` when the YAML's
``console.enabled`` is true (see `settings.ConsoleConfig`); it never runs
through the API plugin pipeline. `app.console_app` builds it; each page is
one module (`signin`, `usage`, `keys`, `budgets`, `privacy`), the session
and its cookie are in `session`, the security headers and CSRF check in
`guard`, sign-in messages leave through a `delivery.Delivery`.

This package's ``__init__`` imports nothing, so that `lunos_proxy.config`
can import `settings` without pulling in the web app.
"""
