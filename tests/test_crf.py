"""The CRF head against brute-force enumeration of every tag sequence on tiny
inputs, its IOB2 constraints, and its mask checks."""

import itertools
import math

import pytest
import torch

from finetune.ner.crf import DISALLOWED_SCORE, CRFTagger, iob2_transition_masks

LABELS = ["B-X", "I-X", "O"]
LENGTHS = [4, 2, 3, 1]  # a padded batch


def random_batch(seed: int, num_tags: int = 3, lengths=LENGTHS):
    generator = torch.Generator().manual_seed(seed)
    batch, seq_len = len(lengths), max(lengths)
    emissions = torch.randn(batch, seq_len, num_tags, generator=generator) * 2
    tags = torch.randint(0, num_tags, (batch, seq_len), generator=generator)
    mask = torch.tensor([[t < n for t in range(seq_len)] for n in lengths])
    tags = tags.masked_fill(~mask, -100)  # padding label, as a collate function would write it
    return emissions, tags, mask


def randomize(tagger: CRFTagger, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in tagger.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))


def path_score(tagger, emissions_row, path) -> float:
    crf = tagger.crf  # parametrized attributes read as free + constraint mask
    score = crf.start_transitions[path[0]] + emissions_row[0, path[0]]
    for t in range(1, len(path)):
        score = score + crf.transitions[path[t - 1], path[t]] + emissions_row[t, path[t]]
    return float(score + crf.end_transitions[path[-1]])


@torch.no_grad()
def brute_force(tagger, emissions, tags, mask):
    """Mean NLL and best paths by enumerating all num_tags**length sequences."""
    nll, best = [], []
    for b in range(emissions.shape[0]):
        length = int(mask[b].sum())
        paths = list(itertools.product(range(tagger.num_tags), repeat=length))
        scores = [path_score(tagger, emissions[b], p) for p in paths]
        log_z = math.log(sum(math.exp(s - max(scores)) for s in scores)) + max(scores)
        nll.append(log_z - path_score(tagger, emissions[b], tags[b, :length].tolist()))
        best.append(list(paths[max(range(len(paths)), key=scores.__getitem__)]))
    return sum(nll) / len(nll), best


@pytest.mark.parametrize("seed", range(5))
def test_nll_and_viterbi_match_brute_force(seed):
    tagger = CRFTagger(3)
    randomize(tagger, seed)
    emissions, tags, mask = random_batch(seed)
    legal_tags = tags.clamp(min=0)
    expected_nll, expected_paths = brute_force(tagger, emissions, legal_tags, mask)
    assert tagger.neg_log_likelihood(emissions, tags, mask).item() == pytest.approx(expected_nll, rel=1e-5, abs=1e-5)
    assert tagger.decode(emissions, mask) == expected_paths


@pytest.mark.parametrize("seed", range(5))
def test_constrained_crf_matches_brute_force_over_effective_scores(seed):
    tagger = CRFTagger(3, constrained_transitions=True, labels=LABELS)
    randomize(tagger, seed)
    emissions, _, mask = random_batch(seed)
    # Gold paths that obey IOB2 (the aligner guarantees this).
    tags = torch.tensor([[0, 1, 1, 2], [2, 0, 2, 2], [0, 0, 1, 2], [2, 2, 2, 2]])
    expected_nll, expected_paths = brute_force(tagger, emissions, tags, mask)
    assert tagger.neg_log_likelihood(emissions, tags, mask).item() == pytest.approx(expected_nll, rel=1e-5, abs=1e-4)
    assert tagger.decode(emissions, mask) == expected_paths


def is_legal_iob2(path, labels):
    previous = "O"
    for tag_id in path:
        tag = labels[tag_id]
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return False
        previous = tag
    return True


def test_constrained_decoding_never_outputs_an_illegal_transition():
    labels = ["B-PS", "I-PS", "B-LC", "I-LC", "O"]
    tagger = CRFTagger(len(labels), constrained_transitions=True, labels=labels)
    unconstrained = CRFTagger(len(labels))
    generator = torch.Generator().manual_seed(0)
    emissions = torch.randn(64, 12, len(labels), generator=generator) * 5
    emissions[..., [1, 3]] += 4.0  # emissions that favour I- tags everywhere
    lengths = torch.randint(1, 13, (64,), generator=generator)
    mask = torch.arange(12)[None, :] < lengths[:, None]
    paths = tagger.decode(emissions, mask)
    assert all(is_legal_iob2(p, labels) for p in paths)
    assert [len(p) for p in paths] == lengths.tolist()
    # Without constraints these emissions do produce illegal paths: the test has teeth.
    assert not all(is_legal_iob2(p, labels) for p in unconstrained.decode(emissions, mask))


def test_framed_sequences_open_and_close_with_the_frame_tag_so_no_entity_starts_inside():
    """Our windows are [CLS] ... [SEP], both labelled O. Emissions that favour B-X on [CLS] and I-X on
    the first real token must not give the first token an I-X once the special tokens are cut off."""
    labels = ["B-PS", "I-PS", "B-LC", "I-LC", "O"]
    framed = CRFTagger(len(labels), constrained_transitions=True, labels=labels, frame_tag="O")
    unframed = CRFTagger(len(labels), constrained_transitions=True, labels=labels)
    generator = torch.Generator().manual_seed(0)
    emissions = torch.randn(64, 10, len(labels), generator=generator)
    emissions[:, 0, 0] += 8.0  # B-PS on [CLS]
    emissions[:, 1:, 1] += 6.0  # I-PS everywhere after
    lengths = torch.randint(3, 11, (64,), generator=generator)
    mask = torch.arange(10)[None, :] < lengths[:, None]
    paths = framed.decode(emissions, mask)
    assert all(p[0] == 4 and p[-1] == 4 for p in paths), "[CLS] and [SEP] are O"
    assert all(is_legal_iob2(p[1:-1], labels) for p in paths), "no I- opens the text between them"
    # Without the frame, these emissions open the text with an orphan I-PS: the test has teeth.
    assert not all(is_legal_iob2(p[1:-1], labels) for p in unframed.decode(emissions, mask))


def test_a_tagger_saved_before_the_frame_constraint_loads_its_end_scores():
    before = CRFTagger(3, constrained_transitions=True, labels=LABELS)
    randomize(before, 0)
    after = CRFTagger(3, constrained_transitions=True, labels=LABELS, frame_tag="O")
    after.load_state_dict(before.state_dict())
    assert torch.equal(after.crf.parametrizations.end_transitions.original, before.crf.end_transitions)


def test_constraints_survive_training_steps():
    tagger = CRFTagger(3, constrained_transitions=True, labels=LABELS)
    emissions, _, mask = random_batch(0)
    tags = torch.tensor([[0, 1, 1, 2], [2, 0, 2, 2], [0, 0, 1, 2], [2, 2, 2, 2]])
    for _ in range(20):
        # SGD with strong weight decay, by hand (torch.optim's first step imports
        # torch._dynamo: seconds this test does not need).
        tagger.zero_grad()
        tagger.neg_log_likelihood(emissions, tags, mask).backward()
        with torch.no_grad():
            for parameter in tagger.parameters():
                parameter -= 0.5 * (parameter.grad + 0.5 * parameter)
    # O -> I-X and start -> I-X stay forbidden whatever the optimizer did to the free scores.
    assert tagger.crf.transitions[2, 1].item() < DISALLOWED_SCORE / 2
    assert tagger.crf.start_transitions[1].item() < DISALLOWED_SCORE / 2
    # Only the free parameters are trainable; the masks are not saved.
    assert {name for name, _ in tagger.named_parameters()} == {
        "crf.end_transitions",
        "crf.parametrizations.start_transitions.original",
        "crf.parametrizations.transitions.original",
    }
    assert not any("mask" in key for key in tagger.state_dict())


def test_transition_masks():
    start, transitions = iob2_transition_masks(LABELS)
    assert start.tolist() == [0, DISALLOWED_SCORE, 0]
    # rows: previous tag, columns: next tag
    assert transitions.tolist() == [[0, 0, 0], [0, 0, 0], [0, DISALLOWED_SCORE, 0]]


@pytest.mark.parametrize(
    "mask_rows, message",
    [
        ([[1, 0, 1, 0]], "not contiguous"),
        ([[1, 1, 1, 1], [1, 1, 0, 1]], "not contiguous"),
        ([[0, 1, 1, 0]], "position 0"),
    ],
)
def test_bad_masks_raise(mask_rows, message):
    tagger = CRFTagger(3)
    mask = torch.tensor(mask_rows)
    emissions = torch.zeros(mask.shape[0], mask.shape[1], 3)
    tags = torch.zeros_like(mask)
    with pytest.raises(ValueError, match=message):
        tagger.neg_log_likelihood(emissions, tags, mask)
    with pytest.raises(ValueError, match=message):
        tagger.decode(emissions, mask)


def test_half_precision_emissions_and_shape_checks():
    tagger = CRFTagger(3)
    emissions, tags, mask = random_batch(1)
    loss = tagger.neg_log_likelihood(emissions.bfloat16(), tags, mask)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    with pytest.raises(ValueError, match="emissions must be"):
        tagger.decode(torch.zeros(2, 3, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match="needs the label names"):
        CRFTagger(3, constrained_transitions=True)
