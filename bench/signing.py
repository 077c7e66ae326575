"""What checking who sent a record costs on the health worker's batch path, beside decoding.

20,000 health records of 200 members are built as agents sign them (`infra.auth.signing`). The
baseline is the worker's path without the check (`decode` of each raw value); the measured one
adds the signature check on the raw bytes and the member's claims after decoding. Also: signing
one record (what every producer adds) and checking one bearer token (REST and the node).
Usage: python bench/signing.py [--records 20000] [--members 200]
"""

from __future__ import annotations

import argparse
import time

from common import finish

from infra.auth.access import Principal, Tokens
from infra.auth.signing import Signer, Verifier, member_credentials
from infra.log.kafka import decode, encode, envelope
from schemas.records import HealthRecord
from schemas.status import HealthStat

SECRET = b"b" * 32
T = "carbon.super"


def records(count: int, members: int) -> list[tuple[bytes, bytes, list]]:
    made = []
    for n in range(count):
        cluster, member = f"app.c{n % 10}.php.domain", f"m{n % members}"
        key = f"{T}/cluster/{cluster}"
        stat = HealthStat(
            cluster_id=cluster,
            network_partition_id="np1",
            member_id=member,
            metric="load_average",
            value=50.0,
            timestamp=1.7e9 + n,
        )
        value = encode(envelope(HealthRecord, stat, key, tenant=T))
        signer = Signer.member(T, cluster, member, member_credentials(SECRET, T, cluster, member)["signingKey"])
        made.append((key.encode(), value, signer.headers("health", key.encode(), value)))
    return made


def best_of(runs: int, work) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--members", type=int, default=200)
    args = parser.parse_args()
    raws = records(args.records, args.members)
    verifier = Verifier(SECRET)

    def decode_only():
        for _key, value, headers in raws:
            decode("health", value, headers)

    def checked():
        for key, value, headers in raws:
            sender = verifier.sender("health", key, value, headers)
            verifier.require_signed("health", sender, decode("health", value, headers))

    base = best_of(3, decode_only)
    signed = best_of(3, checked)
    signer = Signer("platform", SECRET)
    sign = best_of(3, lambda: [signer.headers("health", k, v) for k, v, _ in raws])

    class Model:
        def get(self, tenant, kind, id):
            return None

    tokens = Tokens(SECRET, Model(), "admin", "pw", 3600.0)
    token = tokens.issue(Principal(username="admin", tenant=T, role="admin"), "")
    token_s = best_of(3, lambda: [tokens.principal(token) for _ in range(10_000)]) / 10_000
    n = args.records
    print(f"decode only:            {n / base:10,.0f} records/s ({base / n * 1e6:.2f} us each)")
    print(f"check + decode:         {n / signed:10,.0f} records/s ({signed / n * 1e6:.2f} us each)")
    print(f"ratio (checked / plain): {signed / base:.3f}")
    print(f"signing one record:     {sign / n * 1e6:.2f} us;  checking a token: {token_s * 1e6:.2f} us")
    finish(
        {
            "bench": "signing",
            "records": n,
            "decode_per_s": round(n / base),
            "checked_per_s": round(n / signed),
            "ratio_checked_to_decode": round(signed / base, 3),
            "sign_us": round(sign / n * 1e6, 2),
            "token_check_us": round(token_s * 1e6, 2),
            "members": args.members,
        }
    )


if __name__ == "__main__":
    main()
