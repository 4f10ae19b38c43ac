"""RKD's angle term keeps its two block buffers between calls on the CPU (per thread, per shape and dtype), which
changes no value, and its steps are served from memory the process holds rather than faulted back in from the
system each step (glibc). What that does to the step time is measured in benchmarks/bench_methods.py, not here."""

import os
import platform
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from mmdistill.methods import rkd


def test_the_block_buffers_are_kept_between_calls_of_one_shape_and_made_anew_for_another():
    g = torch.randn(16, 16)
    first, again = rkd._block_buffers(g, 4), rkd._block_buffers(g, 4)
    assert [b.data_ptr() for b in first] == [b.data_ptr() for b in again]
    assert first[0].data_ptr() != first[1].data_ptr() and first[0].shape == (4, 16, 16)
    wider = rkd._block_buffers(torch.randn(20, 20), 4)
    assert wider[0].shape == (4, 20, 20) and wider[0].data_ptr() != first[0].data_ptr()
    precise = rkd._block_buffers(torch.randn(20, 20, dtype=torch.float64), 4)
    assert precise[0].dtype == torch.float64 and rkd._block_buffers(torch.randn(20, 20), 2)[0].shape == (2, 20, 20)


def test_each_thread_has_its_own_block_buffers():
    g = torch.randn(16, 16)
    here = rkd._block_buffers(g, 4)[0].data_ptr()
    there: list[int] = []
    thread = threading.Thread(target=lambda: there.append(rkd._block_buffers(g, 4)[0].data_ptr()))
    thread.start()
    thread.join()
    assert there and there[0] != here


def test_the_buffers_off_the_cpu_are_made_for_each_call():
    g = torch.empty(16, 16, device="meta")
    first, again = rkd._block_buffers(g, 4), rkd._block_buffers(g, 4)
    assert first[0] is not again[0] and first[0].device.type == "meta"
    assert [b.shape for b in first] == [(4, 16, 16), (4, 16, 16)]


def _terms_and_gradient(hs: torch.Tensor, ht: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    hs = hs.detach().requires_grad_()
    angle = rkd.rkd_terms(hs, ht)[1]
    angle.backward()
    return angle.detach(), hs.grad


def test_kept_buffers_leave_the_angle_term_and_its_gradient_the_same_from_call_to_call():
    """Batches of one shape in turn: each gives bitwise what it gives with buffers made for it alone (features far
    apart and near each other: the near ones make blocks again in the same buffers)."""
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(40, 6, generator=g), torch.randn(40, 5, generator=g)) for _ in range(2)]
    near = batches[0][0].clone()
    near[1] = near[0] * 1.001
    batches.append((near, batches[0][1] * 40))  # teacher angles far from the student's: Huber's linear part
    alone = []
    for hs, ht in batches:
        rkd._WORKSPACE.key = None  # made anew
        alone.append(_terms_and_gradient(hs, ht))
    for _ in range(2):
        for (hs, ht), (value, grad) in zip(batches, alone):
            again_value, again_grad = _terms_and_gradient(hs, ht)
            assert torch.equal(again_value, value) and torch.equal(again_grad, grad)


PROBE = """
import resource, torch
from mmdistill.methods import rkd
torch.set_num_threads(1)
if {off}:
    rkd.GLIBC_THRESHOLD_BLOCK = 0
g = torch.Generator().manual_seed(0)
hs, ht = torch.randn(128, 1024, generator=g, requires_grad=True), torch.randn(128, 2048, generator=g)
for _ in range(3):
    rkd.rkd_terms(hs, ht)[1].backward()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    rkd.rkd_terms(hs, ht)[1].backward()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def _faults_per_step(off: bool) -> float:
    """Minor page faults per RKD step in a fresh process that imports the same ``mmdistill`` as this one."""
    source = str(Path(rkd.__file__).resolve().parents[2])
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run([sys.executable, "-c", PROBE.format(off=off)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return float(out.stdout.split()[-1])


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's allocator thresholds (Linux)"
)
@pytest.mark.skipif(
    any(k.startswith("MALLOC_") for k in os.environ), reason="MALLOC_* settings fix glibc's thresholds in this process"
)
def test_rkd_steps_at_batch_128_are_served_from_memory_the_process_holds():
    """A fresh process, batch 128: after three steps, a step faults in (almost) no memory from the system. Without the
    freed threshold block the closed form's 128 KiB float64 temporaries are mapped afresh and faulted in every step
    (about 600 minor faults a step here, against under 30); on a machine where even that does not fault, it skips."""
    without = _faults_per_step(off=True)
    if without < 200:
        pytest.skip(f"this machine's allocator does not fault the temporaries back in ({without:.0f} a step without)")
    assert _faults_per_step(off=False) < 100
