"""Shared test fixtures: the real data beside the project and tiny saved checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def write_fasta(path: Path, records: dict[str, str]) -> Path:
    """Write ``records`` (id -> sequence) as FASTA with 60-column lines; returns ``path``."""
    with open(path, "w") as handle:
        for name, seq in records.items():
            handle.write(f">{name}\n")
            handle.writelines(seq[i : i + 60] + "\n" for i in range(0, len(seq), 60))
    return path


def running_under_ci() -> bool:
    """Whether ``$CI`` says this is a continuous-integration run (``true``/``1``/``yes``, any case)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` from the project root: real plant sequences, annotation and variants.

    Missing data skips the tests that read it on a developer's machine, and fails them under CI (``CI`` set to
    ``true`` or ``1``), where a skip would pass a run that tested nothing.
    """
    if not (SHARED_DATA / "athaliana_chloroplast.fa").exists():
        message = f"shared test data not found at {SHARED_DATA} (the tests read ../shared/data beside the project folder)"
        if running_under_ci():
            pytest.fail(f"{message}; CI={os.environ['CI']} requires it", pytrace=False)
        pytest.skip(message)
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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread (no OpenMP hand-offs, no oversubscription beside other work)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def mlm(tiny_mlm_dir):
    """The tiny checkpoint through ``AutoModelForMaskedLM`` (the direct recomputation's model) and tokenizer."""
    from transformers import AutoModelForMaskedLM

    from genolm.inference import load_model

    return load_model(AutoModelForMaskedLM.from_pretrained(tiny_mlm_dir).eval())


@pytest.fixture(scope="module")
def chloroplast(shared_data):
    """The chloroplast genome of the shared data as a :class:`genolm.inference.Genome`."""
    from genolm.inference import Genome

    return Genome(shared_data / "athaliana_chloroplast.fa")
