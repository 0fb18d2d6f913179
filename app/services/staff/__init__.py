"""Staff accounts and the staff console's sign-in: passkeys (WebAuthn), one-time enrolment
links, console sessions, step-up verification and the administration of members.

A staff member is their API client (``api_clients`` of kind ``staff``): the staff id is
the client id the audit log records. This package adds what a person needs to use the
console: passkeys registered through a one-time link, server-side sessions keyed by a hash
of the cookie's token, a fresh passkey verification before sensitive actions, and the
switches an administrator holds (member disabled, API credentials off, roles, passkeys).
Every sign-in, failed sign-in, enrolment, step-up, sign-out and change is audited.

Routers and the CLI use ``accounts`` (members and their switches), ``enrolment`` (links),
``ceremonies`` (the WebAuthn exchanges) and ``sessions`` (open, load, end, step-up).
``challenges`` and ``tokens`` are this package's own.
"""
