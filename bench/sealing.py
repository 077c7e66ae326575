"""What sealing costs on the write path, against the same work without it, in one run.

The platform's writers seal a command's secrets before it is sent (infra/log/commands_client.py) and
the node seals again before deciding (infra/node/node.py). Measured per command, in microseconds:
building the envelope alone (baseline), plus `seal_model` for the hot path (ScaleCluster from
the health worker: it cannot hold a secret, so the walk is skipped), for an AddCartridge with an
IaaS account (dump, walk, seal two fields, validate), and for an AddCartridge sealed already (the
node's second look: dump and walk, nothing to seal). Also opening one secret (the driver call).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import finish  # noqa: E402

from infra.auth.secrets import SecretBox, new_key  # noqa: E402
from infra.log.kafka import envelope  # noqa: E402
from schemas import commands as C  # noqa: E402
from schemas.definitions import Cartridge  # noqa: E402
from schemas.records import CommandRecord  # noqa: E402

ROUNDS = 2000
TARGET = "carbon.super/cartridge/php"


def per_call_us(work) -> float:
    work()
    started = time.perf_counter()
    for _ in range(ROUNDS):
        work()
    return (time.perf_counter() - started) / ROUNDS * 1e6


def main() -> None:
    box = SecretBox((new_key(), new_key()), "bench")
    body = __import__("json").loads((Path(__file__).parent.parent / "tests/samples/stratos/php.json").read_text())
    body["iaasProvider"][0].update(type="ec2", identity="AKIDEXAMPLE", credential="wJalrXUtnFEMI")
    cartridge = C.AddCartridge(definition=Cartridge.model_validate(body))
    scale = C.ScaleCluster(
        required=3, metric="load_average", reason="above threshold", figures={"average": 71.0, "gradient": 0.4}
    )
    sealed = box.seal_model(cartridge)
    secret = sealed.definition.iaasProvider[0].credential

    def wrap(command):
        return lambda: envelope(CommandRecord, command, TARGET)

    baseline_scale = per_call_us(wrap(scale))
    baseline_cartridge = per_call_us(wrap(cartridge))
    scale_sealed = per_call_us(lambda: envelope(CommandRecord, box.seal_model(scale), TARGET))
    cartridge_sealed = per_call_us(lambda: envelope(CommandRecord, box.seal_model(cartridge), TARGET))
    node_look = per_call_us(lambda: box.seal_model(envelope(CommandRecord, sealed, TARGET)))
    opening = per_call_us(lambda: box.open(secret))
    print(
        f"ScaleCluster  envelope {baseline_scale:8.1f} us   with seal_model {scale_sealed:8.1f} us   "
        f"ratio {scale_sealed / baseline_scale:.2f}"
    )
    print(
        f"AddCartridge  envelope {baseline_cartridge:8.1f} us   with seal_model {cartridge_sealed:8.1f} us   "
        f"ratio {cartridge_sealed / baseline_cartridge:.2f}"
    )
    print(f"node's look at a sealed AddCartridge record: {node_look:.1f} us; opening one secret: {opening:.1f} us")
    finish(
        {
            "bench": "sealing",
            "rounds": ROUNDS,
            "scale_cluster_us": round(baseline_scale, 1),
            "scale_cluster_sealed_us": round(scale_sealed, 1),
            "scale_cluster_ratio": round(scale_sealed / baseline_scale, 2),
            "add_cartridge_us": round(baseline_cartridge, 1),
            "add_cartridge_sealed_us": round(cartridge_sealed, 1),
            "add_cartridge_ratio": round(cartridge_sealed / baseline_cartridge, 2),
            "node_look_us": round(node_look, 1),
            "open_us": round(opening, 1),
        }
    )


if __name__ == "__main__":
    main()
