"""Pretraining throughput: our BertForPreTraining against HF transformers' at the identical config.

One full training step (forward, backward, AdamW step) on the `small` model of
conf/model/small.yaml with a 20,000-token vocabulary, batch 64 x 128, 15% of the real tokens
masked, MLM + NSP losses, dropout on (as in training). Both models start from the same weights,
live in the same process and take turns (warm-up, then ours/HF alternately), so load from other
processes hits both alike; the median step time is reported. Done in fp32 and under bf16 autocast.

FLOP/s are matmul FLOPs actually executed (forward + backward = 3 x forward; HF runs the vocabulary
projection on every position, ours on the masked ones only), divided by wall time, and set against
what torch.mm reaches on the model's own matmul shapes in the same dtype.

    python bench/pretrain_throughput.py

Both models use `torch.optim.AdamW` with its defaults, as `PretrainingModule` configures it; the
cost of the optimizer step alone (default, foreach, fused) is printed separately.
torch's default thread count is used (one per core). Prints a table, then last
``speedup_vs_hf: <ours tokens/s / HF tokens/s, fp32>`` (target >= 2.5).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bert_lm.models.bert import IGNORE_INDEX, BertConfig, BertForPreTraining, training_matmul_flops  # noqa: E402

VOCAB_SIZE = 20_000
BATCH, SEQ_LEN = 64, 128
MASK_RATE = 0.15
WARMUP_STEPS, TIMED_ROUNDS = 2, 5


def make_batch(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """NSP-style pairs: [CLS] A [SEP] B [SEP] padded to SEQ_LEN, a quarter of the rows shorter."""
    lengths = torch.full((BATCH,), SEQ_LEN)
    lengths[: BATCH // 4] = torch.randint(SEQ_LEN // 2, SEQ_LEN, (BATCH // 4,), generator=generator)
    positions = torch.arange(SEQ_LEN)[None, :]
    attention_mask = (positions < lengths[:, None]).long()  # (B, T)
    input_ids = torch.randint(5, VOCAB_SIZE, (BATCH, SEQ_LEN), generator=generator) * attention_mask
    token_type_ids = (positions >= lengths[:, None] // 2).long() * attention_mask
    chosen = (torch.rand(BATCH, SEQ_LEN, generator=generator) < MASK_RATE) & attention_mask.bool()
    mlm_labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    input_ids = torch.where(chosen, torch.full_like(input_ids, 4), input_ids)  # 4 plays [MASK]
    nsp_labels = torch.randint(0, 2, (BATCH,), generator=generator)
    return dict(
        input_ids=input_ids,
        token_type_ids=token_type_ids,
        attention_mask=attention_mask,
        mlm_labels=mlm_labels,
        nsp_labels=nsp_labels,
    )


def matmul_rate(config: BertConfig, mlm_rows: int, dtype: torch.dtype) -> float:
    """FLOP/s of torch.mm on the model's main shapes (FLOP-weighted), median of 3 rounds."""
    tokens, hidden = BATCH * SEQ_LEN, config.hidden_size
    shapes = [
        (tokens, hidden, 3 * hidden),
        (tokens, hidden, config.intermediate_size),
        (tokens, config.intermediate_size, hidden),
        (mlm_rows, hidden, config.vocab_size),
    ]
    operands = [(torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)) for m, k, n in shapes]
    flops = sum(2 * m * k * n for m, k, n in shapes)
    rates = []
    for _ in range(4):
        start = time.perf_counter()
        for a, b in operands:
            torch.mm(a, b)
        rates.append(flops / (time.perf_counter() - start))
    return statistics.median(rates[1:])


def adamw_step_ms(model: torch.nn.Module, **adamw_options) -> float:
    """Median wall time of one AdamW step over the model's parameters (random gradients)."""
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, **adamw_options)
    times = []
    for _ in range(6):
        start = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    return statistics.median(times[1:]) * 1e3


def hf_loss(model, batch) -> torch.Tensor:
    """HF's BertForPreTraining names the batch fields differently."""
    return model(
        input_ids=batch["input_ids"],
        token_type_ids=batch["token_type_ids"],
        attention_mask=batch["attention_mask"],
        labels=batch["mlm_labels"],
        next_sentence_label=batch["nsp_labels"],
    ).loss


def train_step(model, optimizer, batch, is_hf: bool, autocast: bool) -> None:
    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with context:
        if is_hf:
            loss = hf_loss(model, batch)
        else:
            loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def build_models(config: BertConfig, seed: int):
    torch.manual_seed(seed)
    ours = BertForPreTraining(config).train()
    hf_config = transformers.BertConfig(**config.to_hf_dict(), attn_implementation="sdpa")
    hf = transformers.BertForPreTraining(hf_config).train()
    hf.load_state_dict(ours.state_dict())  # same starting point
    return ours, hf


def check_same_loss(ours, hf, batch) -> float:
    """Sanity check before timing: same weights, eval mode -> same MLM+NSP loss. Returns |diff|."""
    ours.eval(), hf.eval()
    with torch.no_grad():
        ours_loss = ours(**batch).loss
        hf_loss_value = hf_loss(hf, batch)
    ours.train(), hf.train()
    return abs(ours_loss.item() - hf_loss_value.item())


def main() -> None:
    model_yaml = yaml.safe_load((REPO_ROOT / "conf" / "model" / "small.yaml").read_text())
    model_yaml.pop("defaults", None)  # Hydra's schema reference, not a BertConfig field
    config = BertConfig(**{**model_yaml, "vocab_size": VOCAB_SIZE})
    batch = make_batch(torch.Generator().manual_seed(0))
    mlm_rows = int((batch["mlm_labels"] != IGNORE_INDEX).sum())
    tokens = BATCH * SEQ_LEN
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
        f"cpus {os.cpu_count()}, load avg at start {os.getloadavg()[0]:.2f}"
    )
    print(
        f"model=small {config.hidden_size}H/{config.num_hidden_layers}L/{config.num_attention_heads}A/"
        f"{config.intermediate_size}I, vocab {VOCAB_SIZE}, batch {BATCH}x{SEQ_LEN} "
        f"({int(batch['attention_mask'].sum())} real tokens, {mlm_rows} masked), MLM+NSP, AdamW, dropout on"
    )
    flops = {  # HF projects every position onto the vocabulary, ours the masked ones
        "ours": training_matmul_flops(config, BATCH, SEQ_LEN, mlm_rows),
        "hf": training_matmul_flops(config, BATCH, SEQ_LEN, tokens),
    }
    rows = []
    for precision in ("fp32", "bf16"):
        autocast = precision == "bf16"
        ours, hf = build_models(config, seed=0)
        if precision == "fp32":
            print(f"eval-mode loss |ours - HF| = {check_same_loss(ours, hf, batch):.2e}")
        models = {"ours": ours, "hf": hf}
        optimizers = {
            name: torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0.01)
            for name, m in models.items()
        }
        times = {"ours": [], "hf": []}
        cpu_times = {"ours": [], "hf": []}  # process CPU seconds (all threads): less sensitive to other load
        for round_index in range(WARMUP_STEPS + TIMED_ROUNDS):
            for name in ("ours", "hf") if round_index % 2 == 0 else ("hf", "ours"):
                start, cpu_start = time.perf_counter(), time.process_time()
                train_step(models[name], optimizers[name], batch, is_hf=name == "hf", autocast=autocast)
                if round_index >= WARMUP_STEPS:
                    times[name].append(time.perf_counter() - start)
                    cpu_times[name].append(time.process_time() - cpu_start)
        mm_rate = matmul_rate(config, mlm_rows, torch.bfloat16 if autocast else torch.float32)
        for name in ("ours", "hf"):
            step_s = statistics.median(times[name])
            model_rate = flops[name] / step_s
            cpu_s = statistics.median(cpu_times[name])
            rows.append((precision, name, step_s, cpu_s, tokens / step_s, model_rate, mm_rate, model_rate / mm_rate))
        del models, optimizers, ours, hf

    print()
    header = f"{'dtype':<6}{'model':<6}{'step s':>9}{'cpu s':>8}{'tokens/s':>10}{'model GFLOP/s':>15}{'mm GFLOP/s':>12}{'model/mm':>10}"
    print(header)
    print("-" * len(header))
    for precision, name, step_s, cpu_s, tok_s, model_rate, mm_rate, ratio in rows:
        print(
            f"{precision:<6}{name:<6}{step_s:>9.3f}{cpu_s:>8.2f}{tok_s:>10.0f}{model_rate / 1e9:>15.1f}"
            f"{mm_rate / 1e9:>12.1f}{ratio:>10.2f}"
        )
    tok_s = {(precision, name): tok for precision, name, _, _, tok, *_ in rows}
    cpu_s = {(precision, name): cpu for precision, name, _, cpu, *_ in rows}
    print()
    print(f"GFLOP per step: ours {flops['ours'] / 1e9:.1f}, HF {flops['hf'] / 1e9:.1f}")
    probe = BertForPreTraining(config)
    print(
        f"AdamW step alone (fp32 params): default {adamw_step_ms(probe):.0f} ms, "
        f"foreach {adamw_step_ms(probe, foreach=True):.0f} ms, fused {adamw_step_ms(probe, fused=True):.0f} ms"
    )
    print(f"load avg at end {os.getloadavg()[0]:.2f} (other processes share these cores; medians + interleaving)")
    print(
        f"speedup by CPU time: fp32 {cpu_s['fp32', 'hf'] / cpu_s['fp32', 'ours']:.2f}, bf16 {cpu_s['bf16', 'hf'] / cpu_s['bf16', 'ours']:.2f}"
    )
    print(f"bf16 speedup vs HF: {tok_s['bf16', 'ours'] / tok_s['bf16', 'hf']:.2f}")
    print(f"speedup_vs_hf: {tok_s['fp32', 'ours'] / tok_s['fp32', 'hf']:.2f}")


if __name__ == "__main__":
    main()
