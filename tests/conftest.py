"""Shared fixtures: small synthetic problems with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from simflib import curriculum, synthetic


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A tiny randomly initialised BERT saved with the embedded tokenizer: real code paths, seconds per run."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from simflib.models import resolve_model

    path = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64,
    )
    transformers.BertModel(config).save_pretrained(path)
    transformers.AutoTokenizer.from_pretrained(resolve_model("minilm"), local_files_only=True).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    """A tiny randomly initialised Llama (SmolLM2's architecture) with SmolLM2's tokenizer, read from the gguf."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    from simflib.models import embedded_source

    folder, gguf_file = embedded_source("smollm2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    path = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=128, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> str:
    """A tiny randomly initialised T5 (the paper's seq2seq family) built from a config, with the BERT tokenizer."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from simflib.models import resolve_model

    tokenizer = transformers.AutoTokenizer.from_pretrained(resolve_model("minilm"), local_files_only=True)
    path = tmp_path_factory.mktemp("tiny-t5")
    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
        pad_token_id=tokenizer.pad_token_id, decoder_start_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    transformers.T5ForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def few_shot_truth() -> synthetic.MarkovTruth:
    return synthetic.markov_truth(100, 12, batch_size=4, seed=3)


@pytest.fixture(scope="session")
def few_shot_curricula() -> np.ndarray:
    return curriculum.protocol(20, seed=11, n_train=100, subset_size=64, epochs=4, batch_size=4)


def naive_simulate(curr: np.ndarray, l0: np.ndarray, A, B) -> np.ndarray:
    """Eq. 1 with explicit loops: the reference the vectorized simulator is checked against."""
    T, b = curr.shape
    m = len(l0)
    out = np.zeros((T + 1, m))
    out[0] = l0
    for t in range(T):
        for j in range(m):
            alpha = sum(A[j, i] for i in curr[t] if i >= 0) if A is not None else 1.0
            beta = sum(B[j, i] for i in curr[t] if i >= 0) if B is not None else 0.0
            out[t + 1, j] = alpha * out[t, j] + beta
    return out


def dense_design(batches: np.ndarray, before: np.ndarray, n: int) -> np.ndarray:
    """Appendix A.1's X = [X^alpha X^beta] for one test example, built with loops."""
    S = len(batches)
    x = np.zeros((S, 2 * n))
    for s in range(S):
        for i in batches[s]:
            if i >= 0:
                x[s, i] += before[s]
                x[s, n + i] += 1.0
    return x
