"""Toy priors small enough to enumerate: a tiny GPT-2 with a word-level tokenizer built in code.

With V words (and BOS, which the model may also emit) and at most L new tokens there are Σ_{k<L} (V+1)^k
sequences ending in EOS plus (V+1)^L sequences cut at the limit, so every quantity of the scorecard can be computed
exactly (see `bayeslm.measurement.exact`). The toy goes through the same `LM` code path as a real model; its
tokenizer uses EOS as its pad token, like GPT-2.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from bayeslm.distributions.lm import LM

WORDS = ("good", "bad", "movie", "the", "very", "not")
BOS, EOS = "<bos>", "<eos>"


@dataclass(frozen=True)
class ToyConfig:
    """A toy prior: `words` is its vocabulary (plus BOS and EOS), `train_steps` of maximum likelihood on a
    synthetic corpus pull it away from the near-uniform distribution of a random initialisation."""

    seed: int = 0
    words: tuple[str, ...] = WORDS
    train_steps: int = 0
    byte_level: bool = False  # each word a byte-level token, " good" (as BPE tokenizers have): texts decode with a
    # leading space, and the structured potentials (regex, grammar, json_schema), which work on bytes, apply
    n_embd: int = 32
    n_layer: int = 2
    n_head: int = 2
    n_positions: int = 32


def toy_tokenizer(words=WORDS, byte_level: bool = False) -> PreTrainedTokenizerFast:
    """A word-level tokenizer; `byte_level`: its words are byte-level tokens ("Ġgood", decoded " good")."""
    if byte_level:
        words = ["Ġ" + w for w in words]  # Ġ is how byte-level BPE writes the space byte
    vocab = {w: i for i, w in enumerate([EOS, BOS, *words])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=EOS))
    if byte_level:
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
        core.decoder = decoders.ByteLevel()
    else:
        core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=EOS,
                                   unk_token=EOS)


def toy_lm(config: ToyConfig = ToyConfig(), *, name: str = "toy") -> LM:
    """A deterministic toy prior built from `config` (same seed, same weights)."""
    tokenizer = toy_tokenizer(config.words, config.byte_level)
    gpt2 = GPT2Config(vocab_size=len(tokenizer), n_positions=config.n_positions, n_embd=config.n_embd,
                      n_layer=config.n_layer, n_head=config.n_head, bos_token_id=tokenizer.bos_token_id,
                      # No dropout: a model scored in training mode must give the log-probs it sampled with.
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(config.seed)
    model = GPT2LMHeadModel(gpt2).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if config.train_steps:
        _train_on_corpus(model, tokenizer, config)
    lm = LM(model, tokenizer, name=name, batch_size=512)
    lm.source = {"toy": {**dataclasses.asdict(config), "words": list(config.words)}}
    return lm


def _synthetic_corpus(words, count: int, generator: torch.Generator) -> list[list[int]]:
    """Sentences from a random sparse Markov chain over the words, each ending in EOS (id 0)."""
    size = len(words) + 2
    transition = torch.rand(size, size, generator=generator) ** 4  # a few strong transitions per word
    transition[:, 1] = 0  # never back to BOS
    transition[1, 0] = 0  # no empty sentence
    transition /= transition.sum(-1, keepdim=True)
    sentences = []
    for _ in range(count):
        ids, token = [1], 1
        while token != 0 and len(ids) < 8:
            token = int(torch.multinomial(transition[token], 1, generator=generator))
            ids.append(token)
        sentences.append(ids)
    return sentences


def _train_on_corpus(model, tokenizer, config: ToyConfig):
    generator = torch.Generator().manual_seed(config.seed)
    corpus = _synthetic_corpus(config.words, 512, generator)
    width = max(len(s) for s in corpus)
    ids = torch.full((len(corpus), width), tokenizer.pad_token_id)
    labels = torch.full((len(corpus), width), -100)
    for i, s in enumerate(corpus):
        ids[i, :len(s)] = torch.tensor(s)
        labels[i, :len(s)] = torch.tensor(s)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(config.train_steps):
        batch = torch.randint(len(corpus), (64,), generator=generator)
        loss = model(input_ids=ids[batch], attention_mask=(labels[batch] != -100).long(), labels=labels[batch]).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
