"""A tiny randomly initialised BERT with the embedded tokenizer: real code paths, seconds per run."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    from simflib.models import resolve_model

    path = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64,
    )
    transformers.BertModel(config).save_pretrained(path)
    transformers.AutoTokenizer.from_pretrained(resolve_model("minilm"), local_files_only=True).save_pretrained(path)
    return str(Path(path))
