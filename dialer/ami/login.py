"""How both AMI clients reach and log in to a PBX (pure, no I/O): the TLS context, and the
frames of a plain or an MD5 login.

TLS (manager.conf `tlsenable`): the server's certificate must chain to `AmiServer.tls_ca` (or
to the system's CAs) and name the host connected to, unless `tls_verify` is off; a
certificate that fails is a configuration error (`AmiCertificateError` in `dialer.ami.client`),
never retried like a network blip.

MD5 (Asterisk's challenge and response, manager.c `action_challenge` and `authenticate`):
`Action: Challenge` with `AuthType: MD5` is answered `Challenge: <digits>`; the Login then
carries `AuthType: MD5` and `Key:` the lower-case hex MD5 of the challenge followed by the
secret. The secret itself is never written to the connection. Asterisk needs nothing for it
beyond the user's plain `secret` in manager.conf.
"""

from __future__ import annotations

import hashlib
import ssl

from dialer.ami import wire as amiwire
from dialer.settings import AUTH_MD5, AmiServer


def tls_context(server: AmiServer) -> ssl.SSLContext | None:
    """The client context for `server` (None without TLS): certificate and host name checked
    (CERT_REQUIRED, check_hostname) against `tls_ca` or the system's CAs, unless `tls_verify`
    is off. Made afresh at each connection, so a replaced CA file is picked up."""
    if not server.tls:
        return None
    context = ssl.create_default_context(cafile=server.tls_ca)
    if not server.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def uses_md5(server: AmiServer) -> bool:
    return server.auth == AUTH_MD5


def challenge_frame(action_id: str) -> bytes:
    return amiwire.encode_action(
        [("Action", "Challenge"), ("ActionID", action_id), ("AuthType", "MD5")]
    )


def md5_key(challenge: str, secret: str) -> str:
    """What Asterisk compares the Login's `Key` with (`%2.2x` per byte: lower-case hex)."""
    return hashlib.md5((challenge + secret).encode()).hexdigest()


def login_frame(server: AmiServer, action_id: str, *, events: bool, challenge: str | None) -> bytes:
    """The Login action: with `challenge` (the MD5 way) a Key and no Secret, else the Secret.
    Encoded, and so checked, before anything is connected; never logged."""
    headers = [("Action", "Login"), ("ActionID", action_id)]
    if challenge is not None:
        headers += [
            ("AuthType", "MD5"),
            ("Username", server.username),
            ("Key", md5_key(challenge, server.secret)),
        ]
    else:
        headers += [("Username", server.username), ("Secret", server.secret)]
    headers.append(("Events", "on" if events else "off"))
    return amiwire.encode_action(headers)


# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH.
_NAME_MISMATCH = frozenset({62, 64})


def wrong_host_name(exc: BaseException) -> bool:
    """The certificate is valid, but for another host than the one connected to."""
    return isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_code in _NAME_MISMATCH


def certificate_problem(exc: BaseException) -> str | None:
    """What was wrong with the server's certificate, or None if `exc` is not a failed
    verification (a handshake cut by the network, a peer that does not speak TLS...)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return exc.verify_message or str(exc)
    return None
