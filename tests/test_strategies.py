"""Each strategy config builds the right Lightning strategy and ZeRO settings."""

import logging

import pytest
import torch
from pytorch_lightning.strategies import DDPStrategy, DeepSpeedStrategy

from bert_lm.training.electra_module import ElectraPretrainingModule
from bert_lm.training.pretraining_module import PretrainingModule
from bert_lm.training.run_support import build_trainer
from bert_lm.training.strategies import StrategyUnavailableError, build_strategy, check_strategy_runnable
from tests.test_run_pretraining import compose_config


def test_auto_is_lightnings_choice():
    assert build_strategy(compose_config(["strategy=auto"]).strategy) == "auto"


def test_ddp_builds_ddp_strategy():
    strategy = build_strategy(compose_config(["strategy=ddp"]).strategy)
    assert isinstance(strategy, DDPStrategy)
    assert strategy._ddp_kwargs == {"find_unused_parameters": False, "bucket_cap_mb": 25}


@pytest.mark.parametrize("name, offload", [("deepspeed_stage_2", False), ("deepspeed_stage_2_offload", True)])
def test_deepspeed_builds_zero2_config(name, offload):
    cfg = compose_config([f"strategy={name}"])
    strategy = build_strategy(cfg.strategy)
    assert isinstance(strategy, DeepSpeedStrategy)
    zero = strategy.config["zero_optimization"]
    assert zero["stage"] == 2
    assert ("offload_optimizer" in zero) == offload
    if offload:
        assert zero["offload_optimizer"]["device"] == "cpu"
        assert cfg.strategy.optimizer == "deepspeed_cpu_adam"


@pytest.mark.parametrize("name", ["deepspeed_stage_2", "deepspeed_stage_2_offload"])
def test_deepspeed_without_cuda_fails_fast_with_a_clear_message(name):
    cfg = compose_config([f"strategy={name}"])
    with pytest.raises(StrategyUnavailableError, match="needs CUDA GPUs.*strategy=auto or strategy=ddp"):
        check_strategy_runnable(cfg.strategy, cuda_available=False)
    check_strategy_runnable(cfg.strategy, cuda_available=True)


def test_offload_uses_deepspeeds_cpu_adam(monkeypatch):
    # The real CPU Adam is a C++ op compiled on first use (minutes): record the
    # construction instead; the GPU smoke script (bench/gpu_smoke.sh) runs the real one.
    import deepspeed.ops.adam

    built = {}

    class RecordingCPUAdam(torch.optim.AdamW):
        def __init__(self, params, adamw_mode, **kwargs):
            built.update(kwargs, adamw_mode=adamw_mode)
            super().__init__(params, **kwargs)

    monkeypatch.setattr(deepspeed.ops.adam, "DeepSpeedCPUAdam", RecordingCPUAdam)
    module = PretrainingModule(
        model_config=dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32), optimizer="deepspeed_cpu_adam", warmup_steps=1, lr=3e-4)

    class _Trainer:
        estimated_stepping_batches = 10

    module._trainer = _Trainer()
    optimizer = module.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, RecordingCPUAdam)
    assert built["adamw_mode"] is True and built["lr"] == 3e-4
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]


def test_electra_under_zero_offload_steps_both_halves_with_cpu_adam(monkeypatch):
    """train.objective=electra with strategy=deepspeed_stage_2_offload: one CPU Adam over generator and
    discriminator, the shared embeddings once (a parameter twice in one optimizer is an error in DeepSpeed)."""
    import deepspeed.ops.adam

    class RecordingCPUAdam(torch.optim.AdamW):
        def __init__(self, params, adamw_mode, **kwargs):
            super().__init__(params, **kwargs)

    monkeypatch.setattr(deepspeed.ops.adam, "DeepSpeedCPUAdam", RecordingCPUAdam)
    cfg = compose_config(["experiment=small_budget_electra", "model=tiny", "strategy=deepspeed_stage_2_offload"])
    module = ElectraPretrainingModule(
        model_config=dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, model_type="electra"),
        special_ids=[0, 1, 2, 3, 4], generator_size=0.5, optimizer=cfg.strategy.optimizer, warmup_steps=1,
    )

    class _Trainer:
        estimated_stepping_batches = 10

    module._trainer = _Trainer()
    optimizer = module.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, RecordingCPUAdam)
    stepped = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert len(stepped) == len(set(stepped)) == len(list(module.model.parameters()))
    generator_params = {id(p) for p in module.model.generator.parameters()}
    discriminator_params = {id(p) for p in module.model.discriminator.parameters()}
    assert generator_params - discriminator_params and discriminator_params - generator_params
    assert generator_params | discriminator_params <= set(stepped)


def test_torch_adamw_by_default():
    module = PretrainingModule(model_config=dict(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                 num_attention_heads=2, intermediate_size=32), warmup_steps=1)

    class _Trainer:
        estimated_stepping_batches = 10

    module._trainer = _Trainer()
    assert type(module.configure_optimizers()["optimizer"]) is torch.optim.AdamW


@pytest.mark.parametrize(
    "amx, precision, warned",
    [(False, "bf16-mixed", True), (True, "bf16-mixed", False), (False, "32", False)],
)
def test_bf16_on_a_cpu_without_amx_warns_that_it_is_emulated(monkeypatch, caplog, tmp_path, amx, precision, warned):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    cfg = compose_config([f"impl.precision={precision}", f"paths.output_dir={tmp_path}"])
    with caplog.at_level(logging.WARNING, logger="bert_lm.training.run_support"):
        trainer = build_trainer(cfg, False, tmp_path)
    assert str(trainer.precision).startswith(precision)
    assert ("emulated" in caplog.text) is warned
