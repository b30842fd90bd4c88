#!/usr/bin/env bash
# Every GPU check of the project, in one script that runs within 10 minutes on one H100/H200 (`device` tool:
# `bash benchmarks/gpu_check.sh`). It prints what it measured; commit the output it writes under $OUT (or
# benchmarks/results/gpu/). The suite never needs a GPU: these are the checks a CPU cannot make.
#
# 1. precision fidelity on CUDA (issue on half precision): projected gradients at bf16/fp16, mixed and true, against
#    fp32, with the library's default eps floor;
# 2. the precision case on CUDA: one ZO-SGD step of MiniLM-L6 + a 2-class head through the Trainer;
# 3. the Triton counter-noise kernels compiled for the GPU (not the interpreter), against the CPU kernels;
# 4. the noise pass against copy_ on the GPU (counter noise; bandwidth bound is the goal);
# 5. ms per step on OPT-1.3B-shaped bf16 (batch 16 x 64): the two-forward floor, the published MeZO procedure, dense
#    ZO on counter noise (fused Triton passes) and on torch noise, and a MeZO-BCD sweep.
# 6. the FSDP2 path through Lightning on CUDA (nccl): the README's ModelParallelStrategy example on one GPU.
set -u
OUT_DIR="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT_DIR"
run() {  # run NAME SECONDS COMMAND...: each check has its own time bound, and one failure does not stop the others
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s)"
  timeout "$limit" "$@" > "$OUT_DIR/$name.txt" 2>&1
  echo "exit $? ; last lines:"
  tail -n 12 "$OUT_DIR/$name.txt"
}
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT_DIR/device.txt" 2>&1 || true
cat "$OUT_DIR/device.txt"

run precision_fidelity 100 python -m benchmarks.precision_fidelity --device cuda --seeds 16 --eps 1e-3 \
  --out gpu_precision_fidelity
sed 's/accelerator="cpu"/accelerator="cuda"/' ../shared/cases/precision_step.py > /tmp/precision_step_cuda.py
run precision_case 100 python /tmp/precision_step_cuda.py --seeds 6
run triton_kernels 90 python -m pytest -q -p no:cacheprovider tests/functional/test_triton_noise.py
run noise_bandwidth 60 python - <<'EOF'
import time, torch
from zolightning.functional.counter_noise import add_counter_noise_
x = torch.zeros(125_000_000, device="cuda")
y = torch.empty_like(x)
for name, fn in [("copy_", lambda: y.copy_(x)),
                 ("counter gaussian add", lambda: add_counter_noise_(x, 1e-3, 7, 11, distribution="gaussian")),
                 ("counter rademacher add", lambda: add_counter_noise_(x, 1e-3, 7, 11, distribution="rademacher"))]:
    fn(); torch.cuda.synchronize()
    times = []
    for _ in range(10):
        t = time.perf_counter(); fn(); torch.cuda.synchronize(); times.append(time.perf_counter() - t)
    print(f"{name}: median {sorted(times)[5] * 1e3:.2f} ms for 125M fp32")
EOF
run step_time_opt_1_3b 150 python -m benchmarks.step_time --model opt-1.3b --device cuda --dtype bf16 --batch 16 \
  --length 64 --repeats 5 --variants floor,mezo-reference,zo-dense,zo-dense-torch-noise,bcd-layer \
  --out gpu_step_time_opt-1.3b_bf16
cp benchmarks/results/gpu_step_time_opt-1.3b_bf16.* "$OUT_DIR"/ 2>/dev/null || true
python - > /tmp/fsdp2_cuda.py <<'EOF'
import re
block = [b for b in re.findall(r"```python\n(.*?)```", open("README.md").read(), re.S) if "ShardedRegressor" in b][0]
print(block.replace('accelerator="cpu", devices=2', 'accelerator="cuda", devices=1')
           .replace("data_parallel_size=2", "data_parallel_size=1"))
EOF
run fsdp2_lightning_cuda 90 python /tmp/fsdp2_cuda.py
