"""Asterisk's Manager Interface, and nothing above it: the asyncio client of the listener and
of live call control (`client`), the blocking client of worker processes (`blocking`), how both
reach and log in to a PBX: TLS and the MD5 challenge (`login`), frames on the wire and the checks
that keep Asterisk safe (`wire`), and AMI events as call facts (`events`). Imports only
`dialer.settings`."""
