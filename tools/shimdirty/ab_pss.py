"""A/B of arun's shim memory: PSS per pod with N pods, variants interleaved (A B A B ...).

``PYTHONPATH=src python tools/shimdirty/ab_pss.py PODS ROUNDS SETTLE VARIANT...`` (root), where a
VARIANT is ``name`` or ``name:KEY=VALUE,KEY=VALUE`` (environment for the daemon side, which the
zygote inherits). Each round starts a zygote, PODS pods, waits until memory settled (at most
SETTLE s, the benchmark's rule), prints shims' and helpers' PSS and tears down.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from arun.benchmarks import shim_bench as sb
from arun.core.runtime import RUNTIME_ARUN
from arun.runtime import ksm


def _rollup(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh.read().splitlines()[1:]:
                key, value = line.split(":")
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


async def one(pods: int, settle: float, env_changes: dict[str, str]) -> dict[str, object]:
    saved = {k: os.environ.get(k) for k in env_changes}
    os.environ.update(env_changes)
    try:
        async with (
            sb.pod_bench_env() as (env, base, rootfs),
            sb.running_pods(env, base, rootfs, RUNTIME_ARUN, pods, prefix="pssab") as running,
        ):
            pids = sorted(set(running.pids))
            zygote = running.shims.zygote
            assert zygote is not None
            helpers = [zygote.pid, *sb._spares_of(zygote.pid, env.ttrpc_address)]

            def measure() -> dict[str, object]:
                per = [sb.pss_kib(p) for p in pids]
                hk = [sb.pss_kib(p) for p in helpers]
                return {
                    "pss_per_pod_kib": round((sum(per) + sum(hk)) / pods),
                    "per_shim": round(sum(per) / len(per)),
                    "helpers_kib": hk,
                }

            await asyncio.sleep(1.0)
            res, secs = await sb._settle(measure, True, settle)
            priv = [_rollup(p).get("Private_Dirty", 0) for p in pids]
            res["shim_private_dirty"] = round(sum(priv) / len(priv))
            res["helpers_private_dirty"] = [_rollup(p).get("Private_Dirty", 0) for p in helpers]
            res["settled_s"] = round(secs)
            return res
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main() -> None:
    pods, rounds, settle = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    variants = []
    for arg in sys.argv[4:]:
        name, _, rest = arg.partition(":")
        changes = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
        variants.append((name, changes))
    ksm.switch_on()  # never switched off again: others may be measuring with it
    for r in range(rounds):
        for name, changes in variants:
            res = asyncio.run(one(pods, settle, changes))
            print(json.dumps({"round": r, "variant": name, **res}), flush=True)


if __name__ == "__main__":
    main()
