"""Shared test fixtures: the real data beside the project and tiny saved checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` from the project root: real plant sequences, annotation and variants."""
    if not (SHARED_DATA / "athaliana_chloroplast.fa").exists():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tokenizer():
    """The NT v1 / AgroNT 6-mer tokenizer."""
    from genolm import GenoLMTokenizer

    return GenoLMTokenizer()


@pytest.fixture(scope="session")
def tiny_mlm_dir(tmp_path_factory, tokenizer) -> Path:
    """A randomly initialised ``tiny`` masked LM saved in Hugging Face format (model + tokenizer)."""
    from genolm import GenoLMConfig, GenoLMForMaskedLM

    torch.manual_seed(0)
    model = GenoLMForMaskedLM(GenoLMConfig.from_preset("tiny")).eval()
    out = tmp_path_factory.mktemp("tiny_mlm")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
