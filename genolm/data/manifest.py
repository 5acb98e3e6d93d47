"""Genome manifests: which genomes to mix and with what sampling weight.

A manifest is a TSV file (``#`` lines are comments) whose header names at least ``species`` and
``source``; ``weight`` (default 1) is the relative sampling probability of the row's windows. Other
columns (``assembly_name``, ``comment``, ...) are kept as metadata. A YAML manifest holds the same rows
as a list of mappings, either at the top level or under ``genomes:``.

A ``source`` is a FASTA file (plain, gzip or bgzip), a folder of them, a URL, or an NCBI assembly
accession. **Relative paths are resolved against the folder that contains the manifest file**, not the
working directory, so a manifest can be moved together with its genomes (``~`` is expanded).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from genolm.data.ncbi import (
    assembly_summary_url,
    is_accession,
    parse_assembly_summary,
    select_assemblies,
)
from genolm.data.remote import fetch_bytes
from genolm.errors import ConfigError
from genolm.genome.fasta import GenomeDataError, is_url

MANIFEST_SUFFIXES = (".tsv", ".yaml", ".yml")


@dataclass
class ManifestEntry:
    """One genome of a mixture."""

    species: str
    source: str
    weight: float = 1.0
    metadata: dict[str, str] = field(default_factory=dict)


def _resolve_path(source: str, base: Path) -> str:
    if is_url(source) or is_accession(source):
        return source
    path = Path(source).expanduser()
    if not path.is_absolute():
        path = base / path
    return os.path.normpath(path)


def _check_entry(entry: ManifestEntry, where: str) -> ManifestEntry:
    if not entry.species:
        raise GenomeDataError(f"{where}: empty 'species'")
    if not entry.source:
        raise GenomeDataError(f"{where}: empty 'source'")
    try:
        weight = float(entry.weight)
    except (TypeError, ValueError):
        raise GenomeDataError(f"{where}: weight {entry.weight!r} is not a number") from None
    if not math.isfinite(weight) or weight <= 0:
        raise GenomeDataError(f"{where}: weight must be a positive number, got {entry.weight!r}")
    entry.weight = weight
    return entry


def load_manifest(path: str | Path) -> list[ManifestEntry]:
    """Read a TSV or YAML manifest; relative ``source`` paths resolve against the manifest's folder."""
    path = Path(path)
    if not path.exists():
        raise GenomeDataError(f"{path}: manifest not found")
    base = path.resolve().parent
    if path.suffix.lower() in (".yaml", ".yml"):
        return _load_yaml(path, base)
    entries: list[ManifestEntry] = []
    header: list[str] | None = None
    with open(path, encoding="utf-8", newline="") as fh:
        for number, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = [v.strip() for v in line.split("\t")]
            if header is None:
                header = fields
                missing = [c for c in ("species", "source") if c not in header]
                if missing:
                    raise GenomeDataError(
                        f"{path}: line {number}: header must name the columns species, source (and optionally "
                        f"weight), tab-separated; missing {', '.join(missing)}"
                    )
                continue
            if len(fields) > len(header):
                raise GenomeDataError(f"{path}: line {number}: {len(fields)} fields but the header has {len(header)}")
            row = dict(zip(header, fields, strict=False))
            entry = ManifestEntry(
                species=row.get("species", ""),
                source=row.get("source", ""),
                weight=row.get("weight") or 1.0,
                metadata={k: v for k, v in row.items() if k not in ("species", "source", "weight")},
            )
            _check_entry(entry, f"{path}: line {number}")
            entry.source = _resolve_path(entry.source, base)
            entries.append(entry)
    if not entries:
        raise GenomeDataError(f"{path}: manifest has no genomes")
    return entries


def _load_yaml(path: Path, base: Path) -> list[ManifestEntry]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise GenomeDataError(f"{path}: invalid YAML: {err}") from None
    if isinstance(data, dict):
        data = data.get("genomes")
    if not isinstance(data, list) or not data:
        raise GenomeDataError(f"{path}: expected a list of genomes (species, source, weight), at the top or under 'genomes:'")
    entries = []
    for i, item in enumerate(data):
        where = f"{path}: genome #{i + 1}"
        if not isinstance(item, dict):
            raise GenomeDataError(f"{where}: expected a mapping with species, source and weight")
        item = {k: v for k, v in item.items()}
        entry = ManifestEntry(
            species=str(item.pop("species", "") or ""),
            source=str(item.pop("source", "") or ""),
            weight=item.pop("weight", 1.0),
            metadata={k: str(v) for k, v in item.items()},
        )
        _check_entry(entry, where)
        entry.source = _resolve_path(entry.source, base)
        entries.append(entry)
    return entries


def write_manifest(entries: Iterable[ManifestEntry], path: str | Path) -> Path:
    """Write entries as a TSV manifest (metadata columns after species, source, weight)."""
    entries = list(entries)
    extra: list[str] = []
    for entry in entries:
        extra += [k for k in entry.metadata if k not in extra]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE, escapechar="\\")
        writer.writerow(["species", "source", "weight", *extra])
        for entry in entries:
            writer.writerow(
                [entry.species, entry.source, f"{entry.weight:g}", *(entry.metadata.get(k, "") for k in extra)]
            )
    return path


def build_ncbi_manifest(
    out: str | Path | None = None,
    group: str = "plant",
    levels: Iterable[str] | None = ("chromosome", "complete"),
    database: str = "refseq",
    taxids: Iterable[str | int] | None = None,
    organism: str | None = None,
    one_per_species: bool = True,
    weighting: str = "equal",
    base_url: str | None = None,
    summary: str | Path | None = None,
) -> list[ManifestEntry]:
    """Build a manifest of the latest NCBI assemblies of a taxonomic group from ``assembly_summary.txt``.

    Args:
        out: TSV file to write (optional).
        group: NCBI group folder (``plant``, ``fungi``, ``vertebrate_other``, ...).
        levels: assembly levels to keep, case-insensitive prefixes (``complete`` = ``Complete Genome``);
            ``None`` keeps all.
        database: ``refseq`` (GCF_) or ``genbank`` (GCA_).
        taxids: keep assemblies whose taxid or species taxid is listed.
        organism: regular expression searched in the organism name.
        one_per_species: keep one assembly per species (reference > representative > level > newest).
        weighting: ``equal`` (every genome 1) or ``size`` (weight = genome size in Mb).
        base_url: genomes base URL (default ``$GENOLM_NCBI_URL`` or NCBI).
        summary: read this local or remote ``assembly_summary.txt`` instead of the group's one.

    Returns:
        The manifest rows; ``source`` is the versioned accession, metadata holds organism,
        assembly name and level, taxid and genome size.
    """
    if weighting not in ("equal", "size"):
        raise ConfigError(f"weighting must be 'equal' or 'size', not {weighting!r}")
    location = str(summary) if summary else assembly_summary_url(group, database, base_url)
    if is_url(location):
        text = fetch_bytes(location).decode("utf-8", "replace")
    else:
        if not Path(location).exists():
            raise GenomeDataError(f"{location}: assembly summary not found")
        text = Path(location).read_text(encoding="utf-8", errors="replace")
    rows = parse_assembly_summary(text, location)
    taxid_set = {str(t) for t in taxids} if taxids else None
    selected = select_assemblies(rows, tuple(levels) if levels else None, taxid_set, organism, one_per_species)
    if not selected:
        raise GenomeDataError(f"{location}: no assembly matches the filters (levels={levels}, taxids={taxids}, organism={organism})")
    entries = []
    for row in selected:
        weight = 1.0
        if weighting == "size":
            if not row.genome_size:
                raise GenomeDataError(f"{location}: line {row.line}: no genome_size for {row.accession}")
            weight = row.genome_size / 1e6
        entries.append(
            ManifestEntry(
                species=row.organism_name,
                source=row.accession,
                weight=weight,
                metadata={
                    "assembly_name": row.asm_name,
                    "assembly_level": row.assembly_level,
                    "taxid": row.taxid,
                    "genome_size": str(row.genome_size or ""),
                },
            )
        )
    if out is not None:
        write_manifest(entries, out)
    return entries
