"""How a client proves who it is to Stratos-ES (docs/security.md), for the example scripts
beside this file; standard library only, so it runs wherever they run.

- a command carries a user's bearer token (POST /api/token) in the `stratos-token` header;
- a member signs its health and status with the key of its payload (`signingKey`);
- a trusted part of your own (one that reports facts as the platform's parts do) signs with
  the platform secret.
The signature: hex HMAC-SHA256 over the topic kind (its name without the prefix), the key's
length (4 bytes, big-endian) and bytes, and the value, in `stratos-signature`, with the signer's
name in `stratos-signer`.
"""

import argparse
import hashlib
import hmac
import os
import struct
from urllib.parse import quote

Headers = list[tuple[str, bytes]]
"""Kafka record headers, as both clients take them."""


def signature_headers(topic_kind: str, key: bytes, value: bytes, signer: str, secret: bytes) -> Headers:
    mac = hmac.new(secret, topic_kind.encode(), hashlib.sha256)
    mac.update(struct.pack(">I", len(key)) + key)
    mac.update(value)
    return [("stratos-signer", signer.encode()), ("stratos-signature", mac.hexdigest().encode())]


def add_command_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token",
        default=os.environ.get("STRATOS_TOKEN"),
        help="a bearer token from POST /api/token (default: $STRATOS_TOKEN)",
    )
    parser.add_argument(
        "--platform-secret",
        default=os.environ.get("STRATOS_PLATFORM_SECRET"),
        help="sign as a platform part instead (default: $STRATOS_PLATFORM_SECRET)",
    )


def add_health_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--signing-key",
        default=os.environ.get("STRATOS_AGENT_SIGNING_KEY"),
        help="the member's signingKey, hex (default: $STRATOS_AGENT_SIGNING_KEY)",
    )
    parser.add_argument(
        "--platform-secret",
        default=os.environ.get("STRATOS_PLATFORM_SECRET"),
        help="sign as a platform part instead (default: $STRATOS_PLATFORM_SECRET)",
    )


def command_headers(args: argparse.Namespace, key: bytes, value: bytes) -> Headers:
    """The user's token; else the platform secret's signature; else nothing (the node answers 401)."""
    if args.token:
        return [("stratos-token", args.token.encode())]
    if args.platform_secret:
        return signature_headers("commands", key, value, "platform", args.platform_secret.encode())
    return []


def health_headers(args: argparse.Namespace, key: bytes, value: bytes, member: str | None) -> Headers:
    """Signed as the member with its signingKey, or as a platform part (a load balancer's
    cluster-wide figures) with the platform secret; else unsigned (dead-lettered)."""
    if args.signing_key and member:
        signer = "/".join(["member"] + [quote(p, safe="") for p in (args.tenant, args.cluster, member)])
        return signature_headers("health", key, value, signer, bytes.fromhex(args.signing_key))
    if args.platform_secret:
        return signature_headers("health", key, value, "platform", args.platform_secret.encode())
    return []
