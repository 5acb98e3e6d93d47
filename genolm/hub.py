"""Model arguments that name a Hugging Face Hub repository instead of a local folder."""

from __future__ import annotations

from pathlib import Path

from .errors import InputDataError


def looks_like_hub_id(model: str) -> bool:
    """``owner/name`` that is not a path: no leading ``.``, ``/`` or ``~`` and exactly one slash."""
    return not model.startswith((".", "/", "~")) and model.count("/") == 1


def local_model_folder(model: str | Path) -> Path:
    """The folder of ``model``: itself when it exists, else the Hub repository ``owner/name`` from the local
    Hugging Face cache, downloaded first when the Hub can be reached.

    Raises :class:`InputDataError` in one line when the folder does not exist and the id is not on the Hub or
    not in the cache while offline, saying how to get it.
    """
    path = Path(model)
    if path.exists():
        return path
    text = str(model)
    if not looks_like_hub_id(text):
        raise InputDataError(f"model {text!r}: no such folder (and not a Hub id 'owner/name')")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(text))
    except LocalEntryNotFoundError:
        raise InputDataError(
            f"model {text!r}: not in the local Hugging Face cache, and the Hub cannot be reached (offline: "
            f"HF_HUB_OFFLINE is set or there is no network); get it with `hf download {text}` where there is "
            "network (same HF_HOME), or give a checkpoint folder"
        ) from None
    except RepositoryNotFoundError:
        raise InputDataError(f"model {text!r}: no such repository on the Hugging Face Hub") from None


__all__ = ["local_model_folder", "looks_like_hub_id"]
