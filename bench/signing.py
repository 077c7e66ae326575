"""What checking who sent a record costs on the health worker's batch path, beside decoding.

20,000 health records of 200 members are built as agents sign them (`infra.auth.signing`). The
baseline is the worker's path without the check (`decode` of each raw value); the measured one
adds the signature check on the raw bytes and the member's claims after decoding. Also: signing
one record (what every producer adds) and checking one bearer token (REST and the node).

History: the commits of clusters' lives (the real decide path, `bench/replay.py`'s template),
signed by the platform as the node signs them. The baseline is decoding alone (`decode_log`, what
every reader did before readers checked); the measured one is what every reader now does per
record (`History.commit`: the platform signature on the raw bytes, then the decode and the fence),
and the check alone (`Verifier.platform`).
Usage: python bench/signing.py [--records 20000] [--members 200] [--clusters 200]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from common import finish
from replay import CLAIM_TAG, ID_TAG, TEMPLATE_N, template_history

from infra.auth.access import Principal, Tokens
from infra.auth.signing import PLATFORM, Signer, Verifier, key_id, member_credentials
from infra.log.eventlog import History, decode_log
from infra.log.kafka import decode, encode, envelope
from schemas.records import Claim, HealthRecord, LogRecord
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


@dataclass(frozen=True)
class Raw:
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: list
    topic: str = "bench.events"


def history_records(clusters: int) -> list[Raw]:
    """One partition: a Claim, then the commits of `clusters` clusters' lives, platform-signed."""
    signer, claim_id = Signer(PLATFORM, SECRET, key_id(SECRET)), "c1a1m" + "1" * 27
    claim = encode(envelope(LogRecord, Claim(partition=0, writer="bench", generation=1), "claim/0", record_id=claim_id))
    made = [Raw(0, 0, b"claim/0", claim, signer.headers("events", b"claim/0", claim))]
    template, _events = template_history(1)
    for n in range(clusters):
        key = f"{T}/cluster/app{n}.php.php.domain".encode()
        for value in template:
            value = (
                value.replace(ID_TAG.encode(), f"{n:08x}".encode())
                .replace(f"app{TEMPLATE_N}.".encode(), f"app{n}.".encode())
                .replace(CLAIM_TAG.encode(), claim_id.encode())
            )
            made.append(Raw(0, len(made), key, value, signer.headers("events", key, value)))
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
    parser.add_argument("--clusters", type=int, default=200)
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
    history = history_records(args.clusters)
    commits = len(history)

    def decode_alone():
        for raw in history:
            decode_log(raw.value)

    def verify_alone():
        for raw in history:
            verifier.platform("events", raw.key, raw.value, raw.headers)

    def read_history():
        reader = History(verifier)
        for raw in history:
            reader.commit(raw)

    runs = [(decode_alone, []), (verify_alone, []), (read_history, [])]
    for _ in range(5):  # interleaved, the best of each: the machine is shared and noisy
        for work, times in runs:
            times.append(best_of(1, work))
    decode_history, verify_history, read = (min(times) for _work, times in runs)
    size = sum(len(raw.value) for raw in history) / commits
    n = args.records
    print(f"history: {commits:,} commits of {size:,.0f} bytes on average")
    print(f"  decode alone (decode_log):        {decode_history / commits * 1e6:7.2f} us each")
    print(f"  platform signature check alone:   {verify_history / commits * 1e6:7.2f} us each")
    print(f"  History.commit (check + decode):  {read / commits * 1e6:7.2f} us each")
    print(f"  ratio (History.commit / decode alone): {read / decode_history:.3f}")
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
            "history_commits": commits,
            "history_commit_bytes": round(size),
            "history_decode_us": round(decode_history / commits * 1e6, 2),
            "history_verify_us": round(verify_history / commits * 1e6, 2),
            "history_read_us": round(read / commits * 1e6, 2),
            "ratio_history_read_to_decode": round(read / decode_history, 3),
        }
    )


if __name__ == "__main__":
    main()
