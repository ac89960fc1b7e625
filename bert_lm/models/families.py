"""Key names of the model families we load and export, mapped onto our module tree.

Our model always has the tree of HF's ``BertForPreTraining`` (``bert.*`` and
``cls.*``); each family renames the encoder prefix and the MLM head, and some
keys are tied copies that HF leaves out of ``model.safetensors``. One table per
family, so that import and export are both a loop over keys with shape checks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    model_type: str
    prefix: str  # the encoder's prefix in HF checkpoints
    head_keys: dict[str, str]  # HF key prefix -> our key prefix, for the MLM (and NSP) heads
    tied_keys: dict[str, str]  # HF key -> the HF key it is a copy of (left out of safetensors)
    ignored_keys: tuple[str, ...] = ()  # HF key prefixes we never load (heads of other objectives)
    export_drops: tuple[str, ...] = ()  # our key prefixes the family's export leaves out


FAMILIES = {
    "bert": Family(
        model_type="bert",
        prefix="bert",
        head_keys={"cls.": "cls."},
        tied_keys={
            "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
            "cls.predictions.decoder.bias": "cls.predictions.bias",
        },
    ),
    "roberta": Family(
        model_type="roberta",
        prefix="roberta",
        head_keys={
            "lm_head.dense.": "cls.predictions.transform.dense.",
            "lm_head.layer_norm.": "cls.predictions.transform.LayerNorm.",
            "lm_head.bias": "cls.predictions.bias",
        },
        tied_keys={
            "lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
            "lm_head.decoder.bias": "lm_head.bias",
        },
        # RobertaForMaskedLM has neither a pooler nor an NSP head.
        export_drops=("bert.pooler.", "cls.seq_relationship."),
    ),
    "roberta-prelayernorm": Family(
        model_type="roberta-prelayernorm",
        prefix="roberta_prelayernorm",
        head_keys={
            "lm_head.dense.": "cls.predictions.transform.dense.",
            "lm_head.layer_norm.": "cls.predictions.transform.LayerNorm.",
            "lm_head.bias": "cls.predictions.bias",
        },
        tied_keys={
            "lm_head.decoder.weight": "roberta_prelayernorm.embeddings.word_embeddings.weight",
            "lm_head.decoder.bias": "lm_head.bias",
        },
        export_drops=("bert.pooler.", "cls.seq_relationship."),
    ),
    "electra": Family(
        model_type="electra",
        prefix="electra",
        # The generator (ElectraForMaskedLM) head; a discriminator has none, and its
        # replaced-token head is not ours to load for MLM.
        head_keys={
            "generator_predictions.dense.": "cls.predictions.transform.dense.",
            "generator_predictions.LayerNorm.": "cls.predictions.transform.LayerNorm.",
            "generator_lm_head.bias": "cls.predictions.bias",
        },
        tied_keys={"generator_lm_head.weight": "electra.embeddings.word_embeddings.weight"},
        ignored_keys=("discriminator_predictions.",),
        export_drops=("bert.pooler.", "cls.seq_relationship."),
    ),
}

# Our own tied copies (BertLMPredictionHead shares one Parameter for each).
OUR_DECODER_WEIGHT = "cls.predictions.decoder.weight"
OUR_TIED_KEYS = {
    OUR_DECODER_WEIGHT: "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}


def decoder_weight_key(family: Family) -> str:
    """The family's HF key of the MLM output projection (a tied copy of the embeddings unless untied)."""
    return next(key for key, original in family.tied_keys.items() if original.endswith("word_embeddings.weight"))


def tied_keys(family: Family, tie_word_embeddings: bool = True) -> dict[str, str]:
    """The family's tied copies; with untied embeddings the output projection is a weight of its own."""
    if tie_word_embeddings:
        return family.tied_keys
    decoder = decoder_weight_key(family)
    return {k: v for k, v in family.tied_keys.items() if k != decoder}


def our_tied_keys(tie_word_embeddings: bool = True) -> dict[str, str]:
    if tie_word_embeddings:
        return OUR_TIED_KEYS
    return {k: v for k, v in OUR_TIED_KEYS.items() if k != OUR_DECODER_WEIGHT}


def to_ours(family: Family, key: str, tie_word_embeddings: bool = True) -> str | None:
    """Our key for an HF key of ``family``; None for keys we do not load."""
    if not tie_word_embeddings and key == decoder_weight_key(family):
        return OUR_DECODER_WEIGHT
    if key.startswith(family.ignored_keys) or key in family.tied_keys:
        return None
    for theirs, ours in family.head_keys.items():
        if key.startswith(theirs):
            return ours + key[len(theirs) :]
    if key.startswith(family.prefix + "."):
        return "bert." + key[len(family.prefix) + 1 :]
    return key  # left as it is: the caller reports it as unexpected


def to_theirs(family: Family, key: str, tie_word_embeddings: bool = True) -> str | None:
    """The HF key of ``family`` for one of our keys; None for keys the export leaves out."""
    if not tie_word_embeddings and key == OUR_DECODER_WEIGHT:
        return decoder_weight_key(family)
    if key in OUR_TIED_KEYS or key.startswith(family.export_drops):
        return None
    for theirs, ours in family.head_keys.items():
        if key.startswith(ours):
            return theirs + key[len(ours) :]
    return family.prefix + "." + key.removeprefix("bert.")
