"""NCBI assemblies: accessions resolved to files in NCBI's public genomes FTP layout, and
``assembly_summary.txt`` tables.

An accession ``GCF_000001735.4`` lives at
``{base}/all/GCF/000/001/735/GCF_000001735.4_<assembly name>/GCF_000001735.4_<assembly name>_genomic.fna.gz``;
the assembly name is read from the directory listing. ``{base}`` is, in order of precedence, the
``base_url`` argument, the ``GENOLM_NCBI_URL`` environment variable, or
``https://ftp.ncbi.nlm.nih.gov/genomes``. Any HTTP server with the same layout and HTML directory
listings (a mirror) works.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from urllib.parse import unquote

from genolm.data.remote import fetch_bytes
from genolm.errors import ConfigError
from genolm.genome.fasta import GenomeDataError

NCBI_DEFAULT_URL = "https://ftp.ncbi.nlm.nih.gov/genomes"
ACCESSION_RE = re.compile(r"^(GC[AF])_(\d{3})(\d{3})(\d{3})(?:\.(\d+))?$")
_HREF_RE = re.compile(r"""href\s*=\s*["']?([^"' >]+)""", re.IGNORECASE)
_LEVEL_RANK = {"complete genome": 0, "chromosome": 1, "scaffold": 2, "contig": 3}
_CATEGORY_RANK = {"reference genome": 0, "representative genome": 1}


def ncbi_base_url(base_url: str | None = None) -> str:
    """The genomes base URL: ``base_url``, else ``$GENOLM_NCBI_URL``, else NCBI's public server."""
    return (base_url or os.environ.get("GENOLM_NCBI_URL") or NCBI_DEFAULT_URL).rstrip("/")


def is_accession(text: str) -> bool:
    """Whether ``text`` is an NCBI assembly accession such as ``GCF_000001735.4`` or ``GCA_000001735``."""
    return bool(ACCESSION_RE.match(str(text).strip()))


def list_directory(url: str) -> list[str]:
    """Entry names (sub-directories end with ``/``) of an HTML directory listing."""
    url = url.rstrip("/") + "/"
    html = fetch_bytes(url).decode("utf-8", "replace")
    names = []
    for href in _HREF_RE.findall(html):
        href = unquote(href.split("?", 1)[0].split("#", 1)[0])
        if not href or href.startswith(("/", "..", "http:", "https:", "ftp:", "mailto:")):
            continue
        names.append(href)
    return names


def assembly_directory(accession: str, base_url: str | None = None) -> str:
    """URL of an assembly's directory, e.g. ``.../GCF_000001735.4_TAIR10.1``.

    Without a version (``GCF_000001735``) the highest version listed is used.
    """
    match = ACCESSION_RE.match(accession.strip())
    if not match:
        raise GenomeDataError(f"not an NCBI assembly accession: {accession!r} (expected e.g. GCF_000001735.4)")
    prefix, a, b, c, version = match.groups()
    parent = f"{ncbi_base_url(base_url)}/all/{prefix}/{a}/{b}/{c}"
    try:
        entries = list_directory(parent)
    except GenomeDataError as err:
        raise GenomeDataError(f"unknown accession {accession}: {err}") from None
    stem = f"{prefix}_{a}{b}{c}"
    candidates = []
    for entry in entries:
        name = entry.rstrip("/")
        m = re.match(rf"^{stem}\.(\d+)_(.+)$", name)
        if m and (version is None or m.group(1) == version):
            candidates.append((int(m.group(1)), name))
    if not candidates:
        raise GenomeDataError(f"unknown accession {accession}: no assembly directory for it in {parent}/")
    return f"{parent}/{max(candidates)[1]}"


def resolve_accession(accession: str, base_url: str | None = None) -> str:
    """URL of the ``*_genomic.fna.gz`` genome FASTA of an assembly accession."""
    directory = assembly_directory(accession, base_url)
    name = directory.rsplit("/", 1)[1]
    filename = f"{name}_genomic.fna.gz"
    if filename not in {entry.rstrip("/") for entry in list_directory(directory)}:
        raise GenomeDataError(f"assembly {accession}: {filename} not listed in {directory}/")
    return f"{directory}/{filename}"


@dataclass
class AssemblySummaryRow:
    """The columns of an ``assembly_summary.txt`` row that manifests use."""

    accession: str
    organism_name: str
    taxid: str
    species_taxid: str
    refseq_category: str
    version_status: str
    assembly_level: str
    asm_name: str
    seq_rel_date: str
    genome_size: int | None
    line: int


def assembly_summary_url(group: str = "plant", database: str = "refseq", base_url: str | None = None) -> str:
    """URL of NCBI's ``assembly_summary.txt`` for a taxonomic group (``plant``, ``fungi``, ...)."""
    if database not in ("refseq", "genbank"):
        raise ConfigError(f"database must be 'refseq' or 'genbank', not {database!r}")
    return f"{ncbi_base_url(base_url)}/{database}/{group}/assembly_summary.txt"


def parse_assembly_summary(text: str, name: str = "assembly_summary.txt") -> list[AssemblySummaryRow]:
    """Parse an ``assembly_summary.txt`` (the header is the last ``#`` comment line)."""
    header: list[str] | None = None
    rows = []
    required = ("assembly_accession", "organism_name", "version_status", "assembly_level", "asm_name")
    for number, line in enumerate(io.StringIO(text), start=1):
        line = line.rstrip("\r\n")
        if not line:
            continue
        if line.startswith("#"):
            fields = line.lstrip("#").strip().split("\t")
            if fields and fields[0] == "assembly_accession":
                header = fields
                missing = [c for c in required if c not in header]
                if missing:
                    raise GenomeDataError(f"{name}: line {number}: header lacks column(s) {', '.join(missing)}")
            continue
        if header is None:
            raise GenomeDataError(f"{name}: line {number}: data before the '# assembly_accession ...' header line")
        values = next(csv.reader([line], delimiter="\t", quoting=csv.QUOTE_NONE))
        if len(values) <= max(header.index(c) for c in required):
            raise GenomeDataError(f"{name}: line {number}: {len(values)} fields, expected {len(header)}")
        record = dict(zip(header, values, strict=False))
        size = record.get("genome_size", "")
        rows.append(
            AssemblySummaryRow(
                accession=record["assembly_accession"],
                organism_name=record["organism_name"],
                taxid=record.get("taxid", ""),
                species_taxid=record.get("species_taxid", ""),
                refseq_category=record.get("refseq_category", "na"),
                version_status=record["version_status"],
                assembly_level=record["assembly_level"],
                asm_name=record["asm_name"],
                seq_rel_date=record.get("seq_rel_date", ""),
                genome_size=int(size) if size.isdigit() else None,
                line=number,
            )
        )
    if header is None:
        raise GenomeDataError(f"{name}: no '# assembly_accession ...' header line; not an NCBI assembly summary")
    return rows


def select_assemblies(
    rows: list[AssemblySummaryRow],
    levels: tuple[str, ...] | None = ("chromosome", "complete"),
    taxids: set[str] | None = None,
    organism: str | None = None,
    one_per_species: bool = True,
) -> list[AssemblySummaryRow]:
    """Latest assemblies filtered by level (prefix match: ``complete`` = ``Complete Genome``) and taxonomy.

    ``taxids`` keeps rows whose ``taxid`` or ``species_taxid`` is listed; ``organism`` is a regular
    expression searched in the organism name. With ``one_per_species`` the best assembly of each
    species is kept: reference genome first, then representative, then the most contiguous level,
    then the newest release.
    """
    levels_lower = tuple(level.strip().lower() for level in levels) if levels else None
    pattern = re.compile(organism, re.IGNORECASE) if organism else None
    kept = []
    for row in rows:
        if row.version_status != "latest":
            continue
        if levels_lower and not row.assembly_level.lower().startswith(levels_lower):
            continue
        if taxids and row.taxid not in taxids and row.species_taxid not in taxids:
            continue
        if pattern and not pattern.search(row.organism_name):
            continue
        kept.append(row)
    if one_per_species:
        best: dict[str, AssemblySummaryRow] = {}
        for row in kept:
            key = row.species_taxid or row.organism_name
            if key not in best or _preference(row) < _preference(best[key]):
                best[key] = row
        kept = [row for row in kept if best.get(row.species_taxid or row.organism_name) is row]
    return kept


def _preference(row: AssemblySummaryRow) -> tuple:
    date = row.seq_rel_date.replace("/", "")
    return (
        _CATEGORY_RANK.get(row.refseq_category.lower(), 2),
        _LEVEL_RANK.get(row.assembly_level.lower(), 4),
        -int(date) if date.isdigit() else 0,
        row.accession,
    )
