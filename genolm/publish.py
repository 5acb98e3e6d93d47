"""Hub-ready model folders and their model cards (``genolm publish``).

:func:`publish` turns a checkpoint folder (from the pretraining or fine-tuning recipes, or any
``save_pretrained`` folder) into what a Hugging Face Hub model repository holds:

- ``model.safetensors`` and ``config.json``, re-saved from the loaded model (training state, optimizer and
  manifest files are left behind);
- the tokenizer files (``tokenizer.json``, ``tokenizer_config.json``; plus ``vocab.txt`` in ESM format);
- ``README.md``: a model card with YAML metadata (license, tags, library_name, pipeline_tag, datasets,
  metrics), the architecture, training data and hyper-parameters and evaluation results found beside the
  checkpoint, and a usage snippet;
- the training configuration and metrics files it found, copied unchanged.

``format="genolm"`` keeps genolm's classes (``import genolm`` then ``AutoModel*.from_pretrained``);
``format="esm"`` writes transformers' ESM classes (NT v1 / AgroNT architectures only), which load with
plain transformers, without genolm, exactly like the published Nucleotide Transformer checkpoints.
With ``push=True`` the folder is uploaded with ``huggingface_hub``.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import HfApi

from .errors import ConfigError, InputDataError
from .outputs import atomic_folder, check_outputs

logger = logging.getLogger(__name__)

FORMATS = ("genolm", "esm")
# Files looked for in the checkpoint folder and its two parents (run folders hold checkpoints/step-N/).
TRAINING_CONFIG_NAMES = (
    "config.yaml",
    "finetune_config.yaml",
    "pretrain_config.yaml",
    "training_config.yaml",
    "run_config.yaml",
    "train_config.yaml",
)
METRICS_NAMES = ("metrics.json", "eval_results.json", "all_results.json", "test_results.json")
PIPELINE_TAGS = {
    "ForMaskedLM": "fill-mask",
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
    "Model": "feature-extraction",
}
# Numbers in metrics files that describe the evaluation rather than score it: kept out of the YAML metadata.
NOT_METRICS = frozenset(
    {"n", "n_records", "count", "runtime", "samples_per_second", "steps_per_second", "epoch"}
)
# Configuration keys (top level) that describe training data, shown under "Training data".
DATA_KEYS = (
    "data",
    "dataset",
    "datasets",
    "sources",
    "data_options",
    "train",
    "train_file",
    "train_files",
    "validation",
    "test",
    "task",
    "labels_file",
)
MAX_LISTED = 20
EVALUATION_KEYS = ("validation", "test", "eval", "evaluation", "val")
DEFAULT_TAGS = ["genomics", "dna", "plant-genomics", "nucleotide-transformer", "k-mer", "genolm"]


def _find(checkpoint: Path, names: tuple[str, ...]) -> Path | None:
    for folder in (checkpoint, checkpoint.parent, checkpoint.parent.parent):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def _flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"a.b": value}`` (scalars and short lists only)."""
    flat: dict[str, Any] = {}
    if isinstance(values, dict):
        for key, value in values.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
    elif isinstance(values, (str, int, float, bool)) or values is None:
        flat[prefix[:-1]] = values
    elif (
        isinstance(values, (list, tuple))
        and len(values) <= 16
        and all(not isinstance(v, (dict, list)) for v in values)
    ):
        flat[prefix[:-1]] = list(values)
    return flat


def read_training_metadata(
    checkpoint: str | Path, training_config: str | Path | None = None, metrics: str | Path | None = None
) -> dict[str, Any]:
    """Training configuration, evaluation metrics and run facts found with a checkpoint (all optional).

    Looks for, in the checkpoint folder and its two parents:

    - a YAML/JSON configuration (``config.yaml`` as written by ``recipes/finetune.py``, ...), else the
      ``config`` entry of ``training_state.pt`` (``recipes/pretrain.py`` checkpoints; memory-mapped, so the
      optimizer state is not read) or of ``trainer_state.json`` (sharded checkpoints);
    - a metrics JSON (``metrics.json`` of ``recipes/finetune.py``, ``eval_results.json`` of
      ``transformers.Trainer``, ...): numbers under ``validation`` / ``test`` / ``eval`` are evaluation
      results, other top-level scalars (best step, steps, parameter counts) are run facts;
    - ``checkpoint.json`` (the training step) and ``training_state.pt`` / ``trainer_state.json`` (step, tokens
      seen);
    - without a metrics file, the last validation loss and perplexity up to that step in ``log.jsonl``.

    Returns ``{"config": dict, "config_file": Path|None, "metrics": {name: number}, "metrics_file":
    Path|None, "facts": {name: value}}``.
    """
    checkpoint = Path(checkpoint)
    config_file = Path(training_config) if training_config else _find(checkpoint, TRAINING_CONFIG_NAMES)
    metrics_file = Path(metrics) if metrics else _find(checkpoint, METRICS_NAMES)
    config: dict[str, Any] = {}
    facts: dict[str, Any] = {}
    if config_file is not None:
        text = config_file.read_text()
        try:
            loaded = yaml.safe_load(text) if config_file.suffix in (".yaml", ".yml") else json.loads(text)
        except (yaml.YAMLError, json.JSONDecodeError) as err:
            raise InputDataError(f"{config_file}: cannot parse the training configuration: {err}") from None
        if not isinstance(loaded, dict):
            raise InputDataError(f"{config_file}: expected a mapping of training options")
        config = loaded
    state_file = checkpoint / "training_state.pt"
    if state_file.is_file():
        from .training.checkpoint import load_training_state

        try:
            state = load_training_state(checkpoint)  # weights_only: nothing in the file runs code
        except Exception as err:  # an unreadable training state only costs the card some details
            logger.warning("%s: not read (%s)", state_file, err)
            state = {}
        if isinstance(state, dict):
            if not config and isinstance(state.get("config"), dict):
                config = state["config"]
            facts.update(
                {k: state[k] for k in ("step", "tokens_seen") if isinstance(state.get(k), (int, float))}
            )
    trainer_file = checkpoint / "trainer_state.json"  # the same facts in a sharded checkpoint
    if trainer_file.is_file():
        try:
            trainer = json.loads(trainer_file.read_text())
        except json.JSONDecodeError as err:
            logger.warning("%s: not read (%s)", trainer_file, err)
            trainer = {}
        if isinstance(trainer, dict):
            if not config and isinstance(trainer.get("config"), dict):
                config = trainer["config"]
            facts.update(
                {k: trainer[k] for k in ("step", "tokens_seen") if isinstance(trainer.get(k), (int, float))}
            )
    manifest = checkpoint / "checkpoint.json"
    if manifest.is_file() and "step" not in facts:
        facts["step"] = json.loads(manifest.read_text()).get("step")
    numbers: dict[str, float] = {}
    if metrics_file is not None:
        raw = json.loads(metrics_file.read_text())
        splits = [k for k, v in raw.items() if isinstance(v, dict) and k in EVALUATION_KEYS]
        evaluated = {k: raw[k] for k in splits} if splits else raw
        numbers = {
            k: float(v)
            for k, v in _flatten(evaluated).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        if splits:
            facts.update(
                {k: v for k, v in raw.items() if k not in splits and isinstance(v, (str, int, float, bool))}
            )
    if not numbers:
        numbers = _validation_from_log(checkpoint, facts.get("step"))
    return {
        "config": config,
        "config_file": config_file,
        "metrics": numbers,
        "metrics_file": metrics_file,
        "facts": facts,
    }


def _validation_from_log(checkpoint: Path, step: int | None) -> dict[str, float]:
    """The last validation loss / perplexity at or before ``step`` in a pretraining run's ``log.jsonl``."""
    log = _find(checkpoint, ("log.jsonl",))
    if log is None:
        return {}
    found: dict[str, float] = {}
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "val_loss" in record and (step is None or record.get("step", 0) <= step):
            found = {"validation.loss": float(record["val_loss"])}
            if "val_perplexity" in record:
                found["validation.perplexity"] = float(record["val_perplexity"])
    return found


def _show(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _yaml_block(metadata: dict[str, Any]) -> str:
    return "---\n" + yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True) + "---\n"


def _metric_id(name: str) -> str:
    """``"test.eval_f1"`` -> ``"f1"`` (the metric part of a flattened key)."""
    last = name.split(".")[-1].split("/")[-1]
    for prefix in ("eval_", "test_", "validation_", "val_"):
        last = last.removeprefix(prefix)
    return last


def model_card(
    info: dict[str, Any],
    metadata: dict[str, Any],
    *,
    model_id: str,
    output_format: str,
    license: str,
    datasets: list[str],
    tags: list[str],
) -> str:
    """The README.md text of a published model (YAML metadata + markdown)."""
    architecture = info["architecture"]
    pipeline_tag = next((tag for suffix, tag in PIPELINE_TAGS.items() if architecture.endswith(suffix)), None)
    scored = {k: v for k, v in metadata["metrics"].items() if _metric_id(k) not in NOT_METRICS}
    # The model index reports test results when there are any (validation picked the checkpoint).
    reported = {k: v for k, v in scored.items() if k.split(".")[0] == "test"} or scored
    metric_ids = sorted({_metric_id(k) for k in reported})
    header: dict[str, Any] = {
        "license": license,
        "library_name": "transformers" if output_format == "esm" else "genolm",
        "tags": tags,
    }
    if pipeline_tag:
        header["pipeline_tag"] = pipeline_tag
    if datasets:
        header["datasets"] = datasets
    if metric_ids:
        header["metrics"] = metric_ids
        header["model-index"] = [
            {
                "name": model_id,
                "results": [
                    {
                        "task": {"type": pipeline_tag or "other"},
                        "dataset": {
                            "name": datasets[0] if datasets else "custom",
                            "type": datasets[0] if datasets else "custom",
                        },
                        "metrics": [
                            {"type": _metric_id(k), "name": k, "value": round(v, 6)}
                            for k, v in sorted(reported.items())
                        ],
                    }
                ],
            }
        ]
    esm_class = architecture.replace("GenoLM", "Esm") if output_format == "esm" else architecture
    auto = {
        "fill-mask": "AutoModelForMaskedLM",
        "text-classification": "AutoModelForSequenceClassification",
        "token-classification": "AutoModelForTokenClassification",
    }.get(pipeline_tag or "", "AutoModel")
    lines = [_yaml_block(header), f"# {model_id.split('/')[-1]}", ""]
    family = "NT v2" if info["positions"] == "rotary" else "NT v1 / AgroNT"
    lines += [
        f"A genomic language model of the Nucleotide Transformer family ({family} architecture): a BERT-style "
        f"encoder over non-overlapping {info['k']}-mer tokens, published with genolm.",
        "",
        "## Model",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | `{esm_class}` |",
        f"| parameters | {info['parameters']:,} |",
        f"| layers / hidden size / heads | {info['layers']} / {info['hidden_size']} / {info['attention_heads']} |",
        f"| feed-forward | {info['ffn']} |",
        f"| positions | {info['positions']} |",
        f"| tokenizer | {info['k']}-mers, `{info['vocab_layout']}` vocabulary ({info['vocab_size']} ids), `<cls>` "
        "prepended, no `<eos>` |",
        f"| context | {info['context_tokens']} tokens (~{info['context_bp']:,} bp) |",
        "",
        "## Training data",
        "",
    ]
    config = metadata["config"]
    data_config = {k: v for k, v in config.items() if k in DATA_KEYS}
    if data_config or datasets:
        lines += [f"- dataset: `{d}`" for d in datasets]
        for key, value in data_config.items():
            if isinstance(value, list):
                shown = [json.dumps(v) if isinstance(v, dict) else str(v) for v in value[:MAX_LISTED]]
                more = f" ... and {len(value) - MAX_LISTED} more" if len(value) > MAX_LISTED else ""
                empty = " (the bundled example genome)" if key == "sources" and not value else ""
                lines.append(f"- `{key}`: " + (", ".join(f"`{v}`" for v in shown) or "none") + more + empty)
            elif isinstance(value, dict):
                lines += [f"- `{key}.{k}`: `{v}`" for k, v in _flatten(value).items()]
            else:
                lines.append(f"- `{key}`: `{value}`")
    else:
        lines.append("Not recorded with this checkpoint.")
    lines += ["", "## Training hyper-parameters", ""]
    other = {k: v for k, v in config.items() if k not in DATA_KEYS}
    hyper = {k: v for k, v in _flatten(other).items() if v is not None}
    facts = {f"run: {k}": v for k, v in metadata["facts"].items() if k not in config and v is not None}
    hyper = {**facts, **hyper}
    if hyper:
        lines += ["| option | value |", "|---|---|"] + [f"| `{k}` | `{_show(v)}` |" for k, v in hyper.items()]
        if metadata["config_file"] is not None:
            lines += ["", f"The full configuration is in `{metadata['config_file'].name}`."]
    else:
        lines.append("Not recorded with this checkpoint.")
    lines += ["", "## Evaluation", ""]
    if metadata["metrics"]:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in sorted(metadata["metrics"].items())]
    else:
        lines.append("No evaluation results were recorded with this checkpoint.")
    lines += ["", "## Usage", "", "```python"]
    if output_format == "esm":
        lines += ["# plain transformers: no genolm needed"]
    else:
        lines += ["import genolm  # registers genolm's classes with transformers' Auto* factories"]
    lines += [
        f"from transformers import AutoTokenizer, {auto}",
        "",
        f'tokenizer = AutoTokenizer.from_pretrained("{model_id}")',
        f'model = {auto}.from_pretrained("{model_id}")',
        'inputs = tokenizer(["ATGGCGTACGATCGATCGTAGCTAGCTAGCATCGAT"], return_tensors="pt")',
        "outputs = model(**inputs)",
        "embeddings = model.base_model(**inputs).last_hidden_state  # (batch, tokens, hidden); token 0 is <cls>",
        "```",
        "",
    ]
    if output_format == "genolm":
        lines += [
            "Sequence embeddings for a FASTA file: `genolm embed --model "
            f"{model_id} --fasta genes.fa --out embeddings.parquet`.",
            "",
        ]
    lines += [
        "## Limitations",
        "",
        "Sequences are read as non-overlapping k-mers from their first base, so a one-base shift changes every "
        "token; `N` and leftover bases become single-nucleotide tokens. Inputs longer than the context must be "
        "windowed. Check results on held-out chromosomes of your own genomes before relying on them.",
        "",
        "## References",
        "",
        "- Dalla-Torre et al. (2024), The Nucleotide Transformer: building and evaluating robust foundation "
        "models for human genomics. Nature Methods.",
        "- Mendoza-Revilla et al. (2024), A foundational large language model for edible plant genomes "
        "(AgroNT). Communications Biology.",
        "",
    ]
    return "\n".join(lines)


def publish(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    output_format: str = "genolm",
    repo_id: str | None = None,
    push: bool = False,
    private: bool = False,
    license: str = "apache-2.0",
    datasets: list[str] | None = None,
    tags: list[str] | None = None,
    training_config: str | Path | None = None,
    metrics: str | Path | None = None,
    token: str | None = None,
    commit_message: str = "Upload model with genolm publish",
    overwrite: bool = False,
) -> Path:
    """Write a Hub-ready folder for ``checkpoint`` to ``out_dir`` (and upload it with ``push=True``).

    Args:
        checkpoint: a genolm checkpoint folder (``config.json`` + weights + tokenizer files).
        out_dir: the folder to write: new or empty, or replaced as a whole with ``overwrite``; it is filled
            under a temporary name and appears complete or not at all.
        output_format: ``"genolm"`` or ``"esm"`` (transformers' ESM classes; NT v1 / AgroNT architectures).
        repo_id: ``user/name`` on the Hub; names the model in the card's usage snippet; needed by ``push``.
        push: upload ``out_dir`` to ``repo_id`` (created if missing) with ``huggingface_hub.HfApi``.
        private: create the repository as private.
        license: licence identifier of the card's metadata (choose one compatible with the training data).
        datasets: Hub dataset ids (or names) the model was trained / evaluated on.
        tags: extra tags, added to genolm's defaults.
        training_config, metrics: files to use instead of those found beside the checkpoint.
        token: Hub token (default: the one ``huggingface-cli login`` stored, or ``HF_TOKEN``).
        commit_message: message of the upload commit.
        overwrite: replace an existing, non-empty ``out_dir``.

    Returns:
        ``out_dir``.
    """
    from .convert import read_config_json
    from .info import checkpoint_info

    if output_format not in FORMATS:
        raise ConfigError(f"format must be one of {FORMATS}, got {output_format!r}")
    if push and not repo_id:
        raise ConfigError("push needs repo_id (user/name)")
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    if not (checkpoint / "config.json").is_file():
        raise InputDataError(f"{checkpoint}: no config.json (is this a checkpoint folder?)")
    raw = read_config_json(checkpoint)
    if raw.get("model_type") != "genolm":
        raise InputDataError(
            f"{checkpoint}: model_type is {raw.get('model_type')!r}; publish expects a genolm checkpoint"
        )
    check_outputs(
        {},
        {"checkpoint": checkpoint, "training_config": training_config, "metrics": metrics},
        folders={"out_dir": out_dir},
        overwrite=overwrite,
    )
    metadata = read_training_metadata(checkpoint, training_config, metrics)
    info = checkpoint_info(checkpoint)
    if output_format == "esm":
        from .configuration_genolm import GenoLMConfig
        from .convert import esm_config_from_genolm

        esm_config_from_genolm(
            GenoLMConfig.from_pretrained(checkpoint)
        )  # refuses NT-v2 before writing anything
    with atomic_folder(out_dir, overwrite=overwrite) as tmp:  # complete, or not there at all
        if output_format == "esm":
            from .convert import genolm_to_esm

            genolm_to_esm(checkpoint, tmp, overwrite=True)  # verifies the exported logits before saving
        else:
            _save_genolm(checkpoint, tmp, info["architecture"])
        for source in (metadata["config_file"], metadata["metrics_file"]):
            if source is not None and not (tmp / source.name).exists():
                shutil.copyfile(source, tmp / source.name)
        if metadata["config"] and metadata["config_file"] is None:  # read from training_state.pt
            (tmp / "training_config.yaml").write_text(yaml.safe_dump(metadata["config"], sort_keys=False))
            metadata["config_file"] = tmp / "training_config.yaml"
        model_id = repo_id or out_dir.name
        card = model_card(
            info,
            metadata,
            model_id=model_id,
            output_format=output_format,
            license=license,
            datasets=list(datasets or []),
            tags=list(dict.fromkeys(DEFAULT_TAGS + list(tags or []))),
        )
        (tmp / "README.md").write_text(card)
    logger.info("wrote %s (%s format)", out_dir, output_format)
    if push:
        push_to_hub(out_dir, repo_id, private=private, token=token, commit_message=commit_message)
    return out_dir


def _save_genolm(checkpoint: Path, out_dir: Path, architecture: str) -> None:
    import genolm

    from .tokenization_genolm import GenoLMTokenizer, fit_model_max_length

    model_class = getattr(genolm, architecture, None)
    if model_class is None:
        raise InputDataError(f"{checkpoint}: unknown architecture {architecture!r}")
    model = model_class.from_pretrained(checkpoint)
    model.save_pretrained(out_dir)  # safetensors
    tokenizer = fit_model_max_length(GenoLMTokenizer.from_pretrained(checkpoint), model.config.max_tokens)
    tokenizer.save_pretrained(out_dir)


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload model with genolm publish",
) -> str:
    """Create ``repo_id`` if needed and upload ``folder``; returns the commit URL."""
    api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message=commit_message
    )
    url = getattr(commit, "commit_url", None) or str(commit)
    logger.info("uploaded %s to %s", folder, url)
    return url


__all__ = ["FORMATS", "model_card", "publish", "push_to_hub", "read_training_metadata"]
