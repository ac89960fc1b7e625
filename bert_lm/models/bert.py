"""BERT encoder and pretraining heads in plain PyTorch, named like HF transformers.

One encoder serves three families, told apart by ``BertConfig.model_type``; what
differs between them is arithmetic in a few places, and key names (mapped in
:mod:`bert_lm.models.families`):

* ``bert``: positions 0..T-1; the MLM head's activation is ``hidden_act``;
* ``roberta``: positions count real tokens from ``pad_token_id + 1`` (HF's
  ``create_position_ids_from_input_ids``), one token type, GELU in the MLM head;
* ``electra``: embeddings of ``embedding_size`` projected to ``hidden_size`` by
  ``embeddings_project`` when the two differ; the generator's MLM head maps the
  hidden size back down to ``embedding_size`` (GELU), tied to the embeddings;
* ``roberta-prelayernorm``: RoBERTa with pre-LayerNorm blocks (``x + attn(LN(x))``,
  ``x + ffn(LN(x))``, one more LayerNorm after the last block), cramming's most
  important stability change: it tolerates higher learning rates. The LayerNorms sit
  where HF's ``RobertaPreLayerNorm`` has them (``attention.LayerNorm``,
  ``intermediate.LayerNorm``, the model's ``LayerNorm``).

Every module and parameter carries the name it has in `transformers.BertForPreTraining`, so the
state dict keys are identical and `hf_interop` copies weights key for key with shape checks.
The arithmetic is HF's (post-LN, exact GELU, same init); the differences only change speed:

* attention always goes through `F.scaled_dot_product_attention` with a boolean padding mask;
* the MLM head runs on the masked positions only ("sparse prediction", as in cramming): with a
  small encoder most of the FLOPs are the (H x V) vocabulary projection, and only ~15% of the
  positions carry a label.

Deliberately left out (HF's breadth): decoder mode, caches, cross-attention, head pruning,
relative position embeddings, hidden-state/attention outputs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Label value for positions that take no part in the MLM loss (HF's and CrossEntropyLoss's default).
IGNORE_INDEX = -100

# Supported HF model types, with the architecture our export writes for each: BERT keeps
# its NSP head; RoBERTa has none, and an ELECTRA trained with MLM is a generator.
MODEL_TYPES = {
    "bert": "BertForPreTraining",
    "roberta": "RobertaForMaskedLM",
    "roberta-prelayernorm": "RobertaPreLayerNormForMaskedLM",
    "electra": "ElectraForMaskedLM",
}

# HF's `hidden_act` names we support. "gelu" is exact (erf) GELU, as in the original BERT.
ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": functools.partial(F.gelu, approximate="tanh"),
    "gelu_pytorch_tanh": functools.partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
}


POSITION_INITS = ("normal", "sinusoidal")


@dataclass
class BertConfig:
    """Architecture hyper-parameters, with HF's field names so config.json round-trips."""

    vocab_size: int
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 128
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    model_type: str = "bert"
    embedding_size: int | None = None  # ELECTRA: None means hidden_size
    # How a fresh model's position table starts; not part of HF's config (it changes nothing
    # once trained). "normal": HF's N(0, initializer_range). "sinusoidal": the Transformer's
    # sines and cosines, scaled to the same std, so that one query/key map can attend "k
    # tokens back" at every position at once instead of learning each position separately.
    position_init: str = "normal"
    # BERT ties the MLM output projection to the input embeddings. Untied (HF's own
    # ``tie_word_embeddings=False``), the input rows of pieces rare in the corpus are left
    # as drawn instead of being pushed, with every other non-target row, the same way by
    # each softmax step (Gao et al. 2019, "representation degeneration"; Chung et al. 2021
    # decouple them too). Costs vocab_size x embedding_dim more parameters to train.
    tie_word_embeddings: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the offending key; configs come from YAML, so fail early."""

        def fail(key: str, why: str) -> None:
            raise ValueError(f"BertConfig.{key}={getattr(self, key)!r}: {why}")

        if not isinstance(self.vocab_size, int) or self.vocab_size < 1:
            fail("vocab_size", "must be a positive int (set it from the tokenizer's vocabulary size)")
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "type_vocab_size"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                fail(key, "must be a positive int")
        if self.hidden_size % self.num_attention_heads != 0:
            fail("hidden_size", f"must be divisible by num_attention_heads={self.num_attention_heads}")
        if self.model_type not in MODEL_TYPES:
            fail("model_type", f"must be one of {list(MODEL_TYPES)}")
        if not 1 <= self.max_position_embeddings <= 4096:
            fail("max_position_embeddings", "must be in [1, 4096]")
        if self.max_position_embeddings <= self.position_offset:
            fail("max_position_embeddings", f"leaves no position after the offset {self.position_offset}")
        if self.embedding_size is not None and (not isinstance(self.embedding_size, int) or self.embedding_size < 1):
            fail("embedding_size", "must be a positive int or None (= hidden_size)")
        if self.position_init not in POSITION_INITS:
            fail("position_init", f"must be one of {list(POSITION_INITS)}")
        if self.hidden_act not in ACTIVATIONS:
            fail("hidden_act", f"must be one of {sorted(ACTIVATIONS)}")
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, key) < 1.0:
                fail(key, "must be in [0, 1)")
        for key in ("initializer_range", "layer_norm_eps"):
            if not getattr(self, key) > 0:
                fail(key, "must be > 0")
        if not 0 <= self.pad_token_id < self.vocab_size:
            fail("pad_token_id", f"must be in [0, vocab_size={self.vocab_size})")
        if not isinstance(self.tie_word_embeddings, bool):
            fail("tie_word_embeddings", "must be true or false")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def embedding_dim(self) -> int:
        return self.embedding_size or self.hidden_size

    @property
    def position_offset(self) -> int:
        """RoBERTa numbers real tokens from pad_token_id + 1: that many positions are never used."""
        return self.pad_token_id + 1 if self.model_type.startswith("roberta") else 0

    @property
    def pre_layer_norm(self) -> bool:
        return self.model_type == "roberta-prelayernorm"

    @property
    def max_sequence_length(self) -> int:
        """The longest input the position table allows (512 for RoBERTa's 514 with pad id 1)."""
        return self.max_position_embeddings - self.position_offset

    @property
    def head_act(self) -> str:
        # HF's RoBERTa LM head and ELECTRA generator head hard-code exact GELU; BERT's follows hidden_act.
        return self.hidden_act if self.model_type == "bert" else "gelu"

    def to_hf_dict(self) -> dict[str, Any]:
        """The config.json content HF's config class of ``model_type`` understands."""
        hf = {k: v for k, v in asdict(self).items() if k not in ("embedding_size", "position_init")}
        if self.model_type == "electra":
            hf["embedding_size"] = self.embedding_dim
        if self.model_type.startswith("roberta"):
            hf.update(bos_token_id=0, eos_token_id=2)
        hf.update(
            architectures=[MODEL_TYPES[self.model_type]], position_embedding_type="absolute"
        )
        return hf

    @classmethod
    def from_hf_dict(cls, hf_dict: dict[str, Any]) -> BertConfig:
        """Build from a config.json dict, ignoring HF-only keys but refusing what we cannot run."""
        model_type = hf_dict.get("model_type", "bert")
        if model_type not in MODEL_TYPES:
            raise ValueError(
                f"model_type={model_type!r}: supported model types are {', '.join(MODEL_TYPES)} "
                "(BERT-style encoders with absolute positions)"
            )
        if hf_dict.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                f"position_embedding_type={hf_dict['position_embedding_type']!r}: only 'absolute' is supported"
            )
        if hf_dict.get("is_decoder", False):
            raise ValueError("is_decoder=True: only bidirectional (encoder) BERT is supported")
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in hf_dict.items() if k in names}
        if model_type != "electra" or values.get("embedding_size") == values.get("hidden_size", 768):
            values.pop("embedding_size", None)
        return cls(**values)


# ----------------------------------------------------------------------------- encoder


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        # padding_idx as in HF: the pad row starts at zero and gets no gradient through the lookup.
        dim = config.embedding_dim
        self.word_embeddings = nn.Embedding(config.vocab_size, dim, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, dim)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.roberta_positions = config.position_offset > 0
        self.pad_token_id = config.pad_token_id
        self.max_sequence_length = config.max_sequence_length

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        seq_len = input_ids.shape[1]
        if seq_len > self.max_sequence_length:
            raise ValueError(
                f"sequence length {seq_len} > {self.max_sequence_length}, the longest that "
                f"max_position_embeddings={self.position_embeddings.num_embeddings} allows"
            )
        # Positions are built per call rather than kept in a buffer: a buffer would either add a
        # state-dict key HF does not have (persistent) or be one more thing to keep on-device.
        if self.roberta_positions:
            # HF's create_position_ids_from_input_ids: real tokens count from pad+1, pads sit on pad.
            is_token = (input_ids != self.pad_token_id).int()  # (B, T)
            position_ids = torch.cumsum(is_token, dim=1) * is_token + self.pad_token_id  # (B, T)
        else:
            position_ids = torch.arange(seq_len, device=input_ids.device)  # (T,)
        embeddings = self.word_embeddings(input_ids)  # (B, T, E)
        if token_type_ids is None:
            embeddings = embeddings + self.token_type_embeddings.weight[0]  # segment A everywhere
        else:
            embeddings = embeddings + self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + self.position_embeddings(position_ids)  # (T, E) or (B, T, E)
        return self.dropout(self.LayerNorm(embeddings))


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        batch, seq_len, hidden_size = hidden.shape
        # One (H -> 3H) matmul instead of three: the weights stay separate parameters (HF names),
        # concatenating them costs 3*H*H copies, far less than the B*T*H*H matmul work.
        qkv_weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])  # (3H, H)
        qkv_bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])  # (3H,)
        qkv = F.linear(hidden, qkv_weight, qkv_bias)  # (B, T, 3H)
        qkv = qkv.view(batch, seq_len, 3, self.num_heads, self.head_size).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, nh, T, hs)
        context = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask, dropout_p=self.dropout_p if self.training else 0.0
        )  # (B, nh, T, hs)
        return context.transpose(1, 2).reshape(batch, seq_len, hidden_size)  # (B, T, H)


class BertSelfOutput(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        if not config.pre_layer_norm:
            self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        out = self.dropout(self.dense(hidden)) + residual
        # Post-LN, as in BERT; pre-LN blocks normalise the input instead (BertAttention).
        return self.LayerNorm(out) if hasattr(self, "LayerNorm") else out


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)
        if config.pre_layer_norm:
            self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        normed = self.LayerNorm(hidden) if hasattr(self, "LayerNorm") else hidden
        return self.output(self.self(normed, key_mask), hidden)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        if config.pre_layer_norm:
            self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "LayerNorm"):
            hidden = self.LayerNorm(hidden)
        return self.act(self.dense(hidden))  # (B, T, I)


class BertOutput(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        if not config.pre_layer_norm:
            self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        out = self.dropout(self.dense(hidden)) + residual
        return self.LayerNorm(out) if hasattr(self, "LayerNorm") else out


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        attended = self.attention(hidden, key_mask)  # (B, T, H)
        return self.output(self.intermediate(attended), attended)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layer:
            hidden = layer(hidden, key_mask)
        return hidden


class BertPooler(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, sequence_output: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(sequence_output[:, 0]))  # [CLS] vector, (B, H)


@torch.no_grad()
def init_bert_weights(module: nn.Module, initializer_range: float) -> None:
    """HF's init: N(0, initializer_range) weights, zero biases and pad row, LayerNorm at identity."""
    if isinstance(module, nn.Linear):
        module.weight.normal_(0.0, initializer_range)
        if module.bias is not None:
            module.bias.zero_()
    elif isinstance(module, nn.Embedding):
        module.weight.normal_(0.0, initializer_range)
        if module.padding_idx is not None:
            module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        module.weight.fill_(1.0)
        module.bias.zero_()


@torch.no_grad()
def init_sinusoidal_positions(table: torch.Tensor, config: BertConfig) -> None:
    """Vaswani et al.'s sin/cos table in ``table`` (P, E), rescaled to std ``initializer_range``.

    Position p + k is a fixed rotation of position p for every p, which a linear map can
    exploit; RoBERTa-style numbering still works, the unused offset rows just hold early angles.
    """
    positions, dim = table.shape
    angle_rates = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))  # (E/2,)
    angles = torch.arange(positions, dtype=torch.float64)[:, None] * angle_rates[None, :]  # (P, E/2)
    sinusoids = torch.zeros(positions, dim, dtype=torch.float64)
    sinusoids[:, 0::2] = torch.sin(angles)
    sinusoids[:, 1::2] = torch.cos(angles[:, : dim // 2])
    table.copy_((sinusoids / sinusoids.std() * config.initializer_range).to(table.dtype))


class BertModel(nn.Module):
    """The encoder alone: what finetuning heads (e.g. NER) wrap."""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        # ELECTRA's small embeddings: projected up to the hidden size (HF's `electra.embeddings_project`).
        if config.embedding_dim != config.hidden_size:
            self.embeddings_project = nn.Linear(config.embedding_dim, config.hidden_size)
        self.encoder = BertEncoder(config)
        if config.pre_layer_norm:
            # Pre-LN blocks leave the residual stream unnormalised: one LayerNorm after the last block.
            self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        # A head that never reads the pooler should drop it: unused parameters upset DDP.
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.apply(functools.partial(init_bert_weights, initializer_range=config.initializer_range))
        if config.position_init == "sinusoidal":
            init_sinusoidal_positions(self.embeddings.position_embeddings.weight, config)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """input_ids, token_type_ids, attention_mask: (B, T); attention_mask is 1 for tokens, 0 for padding.

        Returns (sequence_output (B, T, H), pooled_output (B, H) or None without a pooler).
        """
        hidden = self.embeddings(input_ids, token_type_ids)  # (B, T, E)
        if hasattr(self, "embeddings_project"):
            hidden = self.embeddings_project(hidden)  # (B, T, H)
        key_mask = None
        if attention_mask is not None:
            # (B, 1, 1, T), True = may be attended to; broadcasts over heads and query positions.
            # Pad *queries* still get (unused) outputs; every row keeps >= 1 real key ([CLS]).
            key_mask = attention_mask.bool()[:, None, None, :]
        sequence_output = self.encoder(hidden, key_mask)
        if hasattr(self, "LayerNorm"):
            sequence_output = self.LayerNorm(sequence_output)
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
        return sequence_output, pooled_output


# ----------------------------------------------------------------------------- pretraining heads


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        # H -> E: the ELECTRA generator's head returns to the (tied) embedding size.
        self.dense = nn.Linear(config.hidden_size, config.embedding_dim)
        self.act = ACTIVATIONS[config.head_act]
        self.LayerNorm = nn.LayerNorm(config.embedding_dim, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(hidden)))


class BertLMPredictionHead(nn.Module):
    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        # Output projection tied to the input embeddings (as in BERT) unless the config unties it,
        # plus an output-only bias that HF stores both as `cls.predictions.bias` and
        # `cls.predictions.decoder.bias`: one Parameter.
        self.decoder = nn.Linear(config.embedding_dim, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        if config.tie_word_embeddings:
            self.decoder.weight = word_embeddings.weight
        self.decoder.bias = self.bias

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden))  # (..., H) -> (..., V)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = BertLMPredictionHead(config, word_embeddings)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


class _SoftmaxCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy over rows of (N, V) logits, with a leaner backward than F.cross_entropy.

    F.cross_entropy's backward allocates and zero-fills a dense (N, V) gradient for nll_loss, then
    a second (N, V) buffer for log_softmax's backward. With V = 20k these memory passes cost more
    than the head's matmuls on CPU. Here the log-softmax saved by forward becomes the gradient in
    place (softmax - one_hot), so the only (N, V) allocation is forward's. Hence backward runs once
    (no retain_graph reuse) and is not twice differentiable.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # (N, V), at least fp32: under bf16 autocast the logits are bf16.
        log_probs = torch.log_softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
        ctx.save_for_backward(log_probs, labels)
        ctx.logits_dtype = logits.dtype
        return -log_probs.gather(1, labels[:, None]).mean()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss: torch.Tensor) -> tuple[torch.Tensor, None]:
        if getattr(ctx, "backward_done", False):
            raise RuntimeError("softmax_cross_entropy: backward reuses its saved buffer, so it can run only once")
        ctx.backward_done = True
        log_probs, labels = ctx.saved_tensors
        grad = log_probs.exp_()  # softmax, overwriting the saved log-softmax: nothing else reads it
        grad[torch.arange(len(labels), device=labels.device), labels] -= 1.0
        grad.mul_(grad_loss / len(labels))
        return grad.to(ctx.logits_dtype), None


def softmax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Same value and gradient as F.cross_entropy(logits.float(), labels) for labels in [0, V)."""
    return _SoftmaxCrossEntropy.apply(logits, labels)


@dataclass
class PreTrainingOutput:
    """What one pretraining forward returns. MLM fields are None without mlm_labels, NSP loss without nsp_labels."""

    loss: torch.Tensor | None  # mlm_loss + nsp_loss (whichever are present)
    mlm_loss: torch.Tensor | None  # scalar, mean CE over masked positions
    mlm_logits: torch.Tensor | None  # (N_masked, V) fp32, masked positions in row-major (b, t) order
    mlm_labels: torch.Tensor | None  # (N_masked,), the targets matching mlm_logits rows
    mlm_correct: torch.Tensor | None  # scalar long, argmax hits among masked positions (no grad)
    mlm_count: torch.Tensor | None  # scalar long, N_masked
    nsp_logits: torch.Tensor  # (B, 2); class 0 = "B follows A", HF's convention
    nsp_loss: torch.Tensor | None


def training_matmul_flops(config: BertConfig, batch_size: int, seq_len: int, mlm_rows: int) -> float:
    """Matmul FLOPs of one training step (forward + backward ~ 3 x forward).

    ``mlm_rows``: the rows the MLM head projects onto the vocabulary (the masked
    positions here; every position in a dense head). Elementwise work (LayerNorm,
    GELU, softmax, dropout) is left out, as MFU conventions do.
    """
    tokens, hidden, inter = batch_size * seq_len, config.hidden_size, config.intermediate_size
    per_layer = 2 * tokens * (4 * hidden * hidden + 2 * hidden * inter)  # QKV + attention output + FFN
    per_layer += 2 * 2 * batch_size * seq_len * seq_len * hidden  # QK^T and PV
    emb = config.embedding_dim
    heads = 2 * mlm_rows * (hidden * emb + emb * config.vocab_size)  # MLM transform + decoder
    if emb != hidden:
        heads += 2 * tokens * emb * hidden  # ELECTRA's embeddings_project
    heads += 2 * batch_size * (hidden * hidden + 2 * hidden)  # pooler + NSP
    return 3.0 * (config.num_hidden_layers * per_layer + heads)


class BertForPreTraining(nn.Module):
    """BERT with MLM + NSP heads; state dict identical to HF's `BertForPreTraining`."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config, self.bert.embeddings.word_embeddings)
        init = functools.partial(init_bert_weights, initializer_range=config.initializer_range)
        for module in self.cls.modules():
            # A tied decoder's weight *is* the embedding matrix, already initialised (with its pad row
            # zeroed); an untied one starts like HF's: N(0, initializer_range), bias zero.
            if module is not self.cls.predictions.decoder or not config.tie_word_embeddings:
                init(module)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        nsp_labels: torch.Tensor | None = None,
    ) -> PreTrainingOutput:
        """mlm_labels: (B, T), target id at masked positions, IGNORE_INDEX elsewhere. nsp_labels: (B,)."""
        sequence_output, pooled_output = self.bert(input_ids, token_type_ids, attention_mask)
        nsp_logits = self.cls.seq_relationship(pooled_output)  # (B, 2)
        nsp_loss = None if nsp_labels is None else F.cross_entropy(nsp_logits.float(), nsp_labels)

        mlm_loss = mlm_logits = masked_labels = mlm_correct = mlm_count = None
        if mlm_labels is not None:
            is_masked = mlm_labels != IGNORE_INDEX  # (B, T)
            # Gather before the head: transform + (H x V) projection then run on N ~ 0.15*B*T rows,
            # not B*T. Boolean indexing syncs with the device once per step to learn N; worth it.
            masked_labels = mlm_labels[is_masked]  # (N,)
            # fp32 even under bf16 autocast: softmax and argmax over V are more accurate and, on CPU,
            # faster in fp32; the bf16 (N, V) copy is not kept (the matmul's backward does not need it).
            mlm_logits = self.cls.predictions(sequence_output[is_masked]).float()  # (N, V)
            if masked_labels.numel() > 0:
                mlm_loss = softmax_cross_entropy(mlm_logits, masked_labels)
            else:
                # Nothing masked: a zero that still depends on the head, so backward() and DDP work.
                mlm_loss = mlm_logits.sum() * 0.0
            with torch.no_grad():
                mlm_correct = (mlm_logits.argmax(dim=-1) == masked_labels).sum()
                mlm_count = is_masked.sum()

        losses = [x for x in (mlm_loss, nsp_loss) if x is not None]
        return PreTrainingOutput(
            loss=sum(losses) if losses else None,
            mlm_loss=mlm_loss,
            mlm_logits=mlm_logits,
            mlm_labels=masked_labels,
            mlm_correct=mlm_correct,
            mlm_count=mlm_count,
            nsp_logits=nsp_logits,
            nsp_loss=nsp_loss,
        )

    def full_mlm_logits(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense heads for fill-mask and parity checks: (mlm_logits (B, T, V), nsp_logits (B, 2))."""
        sequence_output, pooled_output = self.bert(input_ids, token_type_ids, attention_mask)
        return self.cls.predictions(sequence_output), self.cls.seq_relationship(pooled_output)
