"""Distributed data parallel: 2 CPU processes (gloo) follow the loss curve of 1 process.

The single process runs the same global batch as 2 gradient-accumulation micro-batches; the
data of each shard depends only on (seed, step, shard), so both runs see identical patches and
corruptions, and their gradients differ only by the order of float additions. Tolerance:
rtol 1e-4 on the per-step losses.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist

HERE = Path(__file__).resolve().parent

CHILD = textwrap.dedent("""
    import json, os, sys, time
    sys.path.insert(0, {root!r})
    import torch
    import tests.helpers as tt
    from disyre.training import distributed as ddp, train
    info = ddp.init_distributed(torch.device("cpu"))
    os.makedirs({out!r}, exist_ok=True)
    def step(what):  # rank 0 works (slowly) first; the others only after it is done
        with open({out!r} + "/order.txt", "a") as f:
            f.write(f"{{info.rank}} {{what}} start\\n")
        time.sleep(0.3 if info.is_main else 0)
        with open({out!r} + "/order.txt", "a") as f:
            f.write(f"{{info.rank}} {{what}} end\\n")
        if what == "fail" and info.is_main:
            raise ValueError("no space left")
    ddp.main_first(lambda: step("prepare"), info)
    try:
        ddp.main_first(lambda: step("fail"), info)
    except (ValueError, RuntimeError) as e:
        with open({out!r} + "/order.txt", "a") as f:
            f.write(f"{{info.rank}} error {{e}}\\n")
    cohort = tt.synthetic_cohort(6, seed=0)
    cfg = tt.tiny_config(steps=5, grad_accum={accum})
    res = train(cfg, cohort[:4], None, {out!r}, progress=False)
    ddp.cleanup(info)
    if int(os.environ.get("RANK", "0")) == 0:
        with open({out!r} + "/losses.json", "w") as f:
            json.dump(res.losses, f)
""")


#: Seconds a run may take: the test (three processes at once) took 26 s here (pytest --durations,
#: a 2-core machine running another test session); 240 s, about 9x, leaves room for more load.
TIMEOUT_S = 240
#: Text of the error a rank prints when the rendezvous port was taken in the meantime.
PORT_TAKEN = ("address already in use", "eaddrinuse", "errno 98")


def _free_port() -> int:
    """A port free now; another process may take it before rank 0 binds it (see _finish)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(tmp: Path, name: str, nproc: int, accum: int) -> list[subprocess.Popen]:
    out = tmp / name
    script = tmp / f"{name}.py"
    script.write_text(CHILD.format(root=str(HERE.parent), accum=accum,
                                   out=str(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port())}
    procs = []
    for rank in range(nproc):
        e = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc)}
        if nproc == 1:
            for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
                e.pop(k)
        procs.append(subprocess.Popen([sys.executable, str(script)], env=e,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    return procs


def _finish(tmp: Path, name: str, procs: list[subprocess.Popen], nproc: int, accum: int,
            tries: int = 3) -> list[float]:
    """Wait for a run; started again on a new port (up to ``tries`` times) when the port
    picked by :func:`_free_port` was taken before rank 0 bound it."""
    for attempt in range(tries):
        outs = []
        for i, p in enumerate(procs):
            stdout, _ = p.communicate(timeout=TIMEOUT_S)
            text = stdout.decode(errors="replace")
            if p.returncode != 0 and any(k in text.lower() for k in PORT_TAKEN) \
                    and attempt < tries - 1:
                for other in procs[i + 1:]:  # the others wait for a rendezvous that never comes
                    other.kill()
                    other.communicate()
                break
            outs.append((p.returncode, text))
        else:
            failed = [text for rc, text in outs if rc != 0]
            assert not failed, failed[0][-3000:]
            return json.loads((tmp / name / "losses.json").read_text())
        shutil.rmtree(tmp / name, ignore_errors=True)
        procs = _start(tmp, name, nproc, accum)
    raise AssertionError(f"{name}: the rendezvous port was taken {tries} times")


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_processes_match_one_process_with_accumulation(tmp_path: Path) -> None:
    runs = {"single": _start(tmp_path, "single", nproc=1, accum=2),
            "ddp": _start(tmp_path, "ddp", nproc=2, accum=1)}  # all 3 processes at once
    single = _finish(tmp_path, "single", runs["single"], nproc=1, accum=2)
    ddp = _finish(tmp_path, "ddp", runs["ddp"], nproc=2, accum=1)
    assert len(single) == len(ddp) == 5
    assert single[-1] < single[0]  # it trains
    np.testing.assert_allclose(ddp, single, rtol=1e-4)
    # rank 0 alone wrote the run
    assert (tmp_path / "ddp" / "checkpoints" / "step_0000005" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "ddp" / "run.json").read_text())["world_size"] == 2
    # rank 0 alone prepares shared files first (the cache), the others wait; if it fails,
    # they stop with its error instead of waiting
    order = (tmp_path / "ddp" / "order.txt").read_text().splitlines()
    assert order[:4] == ["0 prepare start", "0 prepare end", "1 prepare start", "1 prepare end"]
    assert order[4:6] == ["0 fail start", "0 fail end"]
    assert sorted(order[6:]) == ["0 error no space left",
                                 "1 error rank 0 failed (ValueError: no space left)"]
