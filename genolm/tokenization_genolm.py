"""K-mer tokenizer for DNA, compatible with the Nucleotide Transformer (NT) and AgroNT vocabularies.

`GenoLMTokenizer` is a `transformers.PreTrainedTokenizerFast` whose backend is a plain `tokenizers.Tokenizer`
(normalizer + regex pre-tokenizer + `WordLevel` model + `<cls>` template), so a saved tokenizer reloads with
`transformers.AutoTokenizer.from_pretrained(path)` even where genolm is not installed.

For whole chromosomes, `GenoLMTokenizer.encode_genome` applies the same rule with numpy on the raw bytes.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import BatchEncoding, PreTrainedTokenizerFast
from transformers.tokenization_utils_base import TruncationStrategy
from transformers.utils import PaddingStrategy

from .genome.bases import TO_ACGTN, VALID

__all__ = ["GenoLMTokenizer", "VOCAB_LAYOUTS", "build_vocab", "fit_model_max_length", "layout_of_vocab_file"]

VOCAB_LAYOUTS = ("nt-v1", "nt-v2")
NUCLEOTIDES = "ATCG"  # the order NT uses for its k-mers and single-nucleotide tokens
WHITESPACE = " \t\n\r\x0b\x0c"  # ignored (FASTA line breaks, padding)
MAX_K = 8

UNK, PAD, MASK, CLS, EOS, BOS = "<unk>", "<pad>", "<mask>", "<cls>", "<eos>", "<bos>"
SPECIAL_TOKENS = (UNK, PAD, MASK, CLS, EOS, BOS)

# Classes of input bytes in `encode_genome`: 0..3 are A, T, C, G (the base-4 digits of a k-mer index).
_CODE_N, _CODE_UNK = 4, 5
_GENOME_CHUNK = 1 << 24  # bases per numpy pass; bounds the memory of encode_genome on long chromosomes


def _byte_classes() -> bytes:
    """Translation table byte -> class code (see `_CODE_*`), for `bytes.translate`: the genome readers' byte
    normalisation (`genolm.genome.bases.TO_ACGTN`), with every byte they reject as `<unk>`."""
    table = bytearray([_CODE_UNK]) * 256
    for byte in np.flatnonzero(VALID):
        base = chr(TO_ACGTN[byte])
        table[byte] = NUCLEOTIDES.index(base) if base in NUCLEOTIDES else _CODE_N
    return bytes(table)


def _normalised_letters() -> dict[str, str]:
    """Upper-case base -> the characters normalised to it (a regex character class), from `TO_ACGTN`."""
    groups: dict[str, str] = {}
    for byte in np.flatnonzero(VALID):
        groups[chr(TO_ACGTN[byte])] = groups.get(chr(TO_ACGTN[byte]), "") + chr(byte)
    return groups


_BYTE_CLASSES = _byte_classes()
_WHITESPACE_BYTES = WHITESPACE.encode()


def build_vocab(vocab_layout: str = "nt-v1", k: int = 6) -> list[str]:
    """Return the ordered vocabulary (index = token id) of a layout.

    Args:
        vocab_layout: `"nt-v1"` or `"nt-v2"` (see `GenoLMTokenizer`).
        k: k-mer size, 1 <= k <= 8.

    Returns:
        `4**k + 5 + 6` tokens for k > 1 (`4 + 1 + 6` for k = 1, where the k-mers are the single bases).
    """
    if vocab_layout not in VOCAB_LAYOUTS:
        raise ValueError(f"vocab_layout must be one of {VOCAB_LAYOUTS}, got {vocab_layout!r}")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
    kmers = ["".join(p) for p in itertools.product(NUCLEOTIDES, repeat=k)]
    singles = ["N"] if k == 1 else [*NUCLEOTIDES, "N"]
    if vocab_layout == "nt-v1":
        return [UNK, PAD, MASK, CLS, *kmers, *singles, EOS, BOS]
    return [UNK, PAD, MASK, CLS, EOS, BOS, *kmers, *singles]


def _build_backend(vocab_layout: str, k: int) -> Tokenizer:
    """The `tokenizers` pipeline implementing NT's rule (see `GenoLMTokenizer`)."""
    vocab = {token: i for i, token in enumerate(build_vocab(vocab_layout, k))}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    backend.normalizer = normalizers.Sequence(
        [
            normalizers.Replace(Regex(f"[{WHITESPACE}]+"), ""),
            *(normalizers.Replace(Regex(f"[{chars}]"), base) for base, chars in _normalised_letters().items()),
        ]
    )
    # Left to right: a full k-mer of A/C/G/T if one starts here, otherwise one character. Inside a run of
    # A/C/G/T this cuts k-mers from the start of the run; the last (len % k) bases of the run, every N and
    # every other character then come out one at a time.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(f"[ACGT]{{{k}}}|."), behavior="isolated")
    backend.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A", pair=f"{CLS} $A $B:1", special_tokens=[(CLS, vocab[CLS])]
    )
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return backend


class GenoLMTokenizer(PreTrainedTokenizerFast):
    """Non-overlapping k-mer tokenizer of the Nucleotide Transformer family (NT v1, NT v2, AgroNT).

    **Rule** (NT's `NucleotidesKmersTokenizer`): the sequence is cut at every `N`; each run of A/C/G/T is cut
    into k-mers from its first base, left to right; the bases left at the end of a run (fewer than k) and
    every `N` become single-nucleotide tokens. `<cls>` is prepended, no `<eos>` is appended. Example, k = 6:
    `ATGCATGCNAAAAAAT -> <cls> ATGCAT G C N AAAAAA T`.

    **Input handling** (beyond NT, whose tokenizer only knows upper-case A/C/G/T/N):

    - lower-case (soft-masked) bases are upper-cased, so soft-masking does not change the ids;
    - the IUPAC ambiguity codes R Y S W K M B D H V and the hard mask `X` (either case) are read as `N`;
    - `U` (uracil) is read as `T`, so RNA sequence gives the ids of its DNA;
    - these rules are the byte table of the genome readers (`genolm.genome.bases.TO_ACGTN`), so a FASTA file
      gives the same ids through the data pipeline and through this tokenizer;
    - spaces, tabs and line breaks are ignored (they do not interrupt a run);
    - any other character (digits, `-`, `.`, `*`, non-ASCII ...) becomes one `<unk>` token per character
      and, like `N`, ends the current run;
    - special tokens written in the text (e.g. `"ACG<mask>TTA"`) are recognised by `__call__`, not by
      `encode_genome`.

    On upper-case A/C/G/T/N the ids equal those of NT's Hugging Face tokenizer (`EsmTokenizer` with NT's
    `vocab.txt`). That tokenizer differs on other input: a run of characters outside its vocabulary (for
    instance lower-case `acgtac`, or `RR`) becomes a single `<unk>`, and whitespace is dropped but does end
    the current run.

    **Vocabulary layouts** (k = 6):

    - `"nt-v1"` (NT v1 models and AgroNT): `<unk>`=0, `<pad>`=1, `<mask>`=2, `<cls>`=3, the 4096 6-mers in
      `itertools.product("ATCG", repeat=6)` order (4-4099), `A T C G N` (4100-4104), `<eos>`=4105,
      `<bos>`=4106. Source: NT's own token list, `compute_dcnuc_tokens_to_ids` / `StandardTokenizer` in
      github.com/instadeepai/nucleotide-transformer (`nucleotide_transformer/tokenizers.py`: special tokens
      `<unk> <pad> <mask> <cls>`, then k-mers + `NUCLEOTIDES` + `EXTRA_NUCLEOTIDES` from `constants.py`, then
      `<eos> <bos>`). The v1 Hub checkpoints (`InstaDeepAI/nucleotide-transformer-500m-human-ref`,
      `-2.5b-multi-species`, ...) have `vocab_size: 4105` in `config.json` for a 4107-line `vocab.txt`:
      `<eos>` and `<bos>`, last, have no embedding row. AgroNT (`InstaDeepAI/agro-nucleotide-transformer-1b`)
      ships the same 4107-token `vocab.txt` with `EsmTokenizer`, `eos_token: null`, `model_max_length: 1024`.
    - `"nt-v2"` (`InstaDeepAI/nucleotide-transformer-v2-*`): `<unk>`=0, `<pad>`=1, `<mask>`=2, `<cls>`=3,
      `<eos>`=4, `<bos>`=5, 6-mers (6-4101), `A T C G N` (4102-4106). Source: the v2 Hub tokenizer gives
      `<pad>`=1, `<cls>`=3, `AAAAAA`=6 and `A T C G N` = 4102-4106, and the v2 `config.json` has
      `vocab_size: 4107` (every token embedded).

    Other k use the same scheme with `4**k` k-mers; for k = 1 the k-mers are the bases and only `N` follows.
    `<eos>` and `<bos>` are in the vocabulary but never produced, and are not registered as `eos_token` /
    `bos_token` (NT's tokenizer config sets `eos_token: null`).

    `GenoLMTokenizer.from_pretrained` also reads a published NT / AgroNT folder (an `EsmTokenizer` `vocab.txt`
    and no `tokenizer.json`): the layout and k are then taken from `vocab.txt`.

    Args:
        vocab_layout: `"nt-v1"` (default) or `"nt-v2"`.
        k: k-mer size (default 6).
        model_max_length: maximum number of tokens, `<cls>` included, used by `truncation=True`.
        **kwargs: passed to `PreTrainedTokenizerFast` (special tokens, padding side, ...).

    Attributes:
        k, vocab_layout: as given; saved in `tokenizer_config.json` and restored by `from_pretrained`.
        kmer_ids: `np.ndarray` (4**k,) of the k-mer ids in `itertools.product("ATCG", repeat=k)` order.
        nucleotide_ids: dict base -> id for `A T C G N`.
        numpy_batch_encode: when True (default), a batch of plain sequences given to `__call__` is encoded with
            `encode_genome` and padded / truncated in numpy, with the same result as the Rust backend and
            many times faster; its `BatchEncoding` has no `.encodings` (see `_encode_plus`).
    """

    vocab_files_names = {**PreTrainedTokenizerFast.vocab_files_names, "nt_vocab_file": "vocab.txt"}
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "right"
    truncation_side = "right"

    def __init__(
        self,
        vocab_layout: str = "nt-v1",
        k: int = 6,
        tokenizer_file: str | None = None,
        tokenizer_object: Tokenizer | None = None,
        nt_vocab_file: str | None = None,
        **kwargs: Any,
    ):
        if tokenizer_object is None and tokenizer_file is not None and os.path.isfile(tokenizer_file):
            tokenizer_object = Tokenizer.from_file(tokenizer_file)
        elif tokenizer_object is None and nt_vocab_file is not None and os.path.isfile(nt_vocab_file):
            # a published NT / AgroNT folder (EsmTokenizer's vocab.txt): its token list sets layout and k
            vocab_layout, k = layout_of_vocab_file(nt_vocab_file)
        expected_vocab = build_vocab(vocab_layout, k)  # validates vocab_layout and k
        if tokenizer_object is None:
            tokenizer_object = _build_backend(vocab_layout, k)
        else:
            _check_backend_vocab(tokenizer_object, expected_vocab, vocab_layout, k, tokenizer_file)
        # Derived from vocab_layout and k, or loading details that should not end up in a saved config.
        for key in ("vocab", "merges", "post_processor", "tokenizer_padding", "tokenizer_truncation"):
            kwargs.pop(key, None)
        for key in ("is_local", "local_files_only"):
            kwargs.pop(key, None)
        kwargs.setdefault("unk_token", UNK)
        kwargs.setdefault("pad_token", PAD)
        kwargs.setdefault("mask_token", MASK)
        kwargs.setdefault("cls_token", CLS)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        self.vocab_layout = vocab_layout
        self.k = k
        super().__init__(tokenizer_object=tokenizer_object, vocab_layout=vocab_layout, k=k, **kwargs)
        self._base_vocab_size = len(expected_vocab)
        self.numpy_batch_encode = True
        self._genome_tables()

    @classmethod
    def convert_to_native_format(cls, trust_remote_code: bool = False, **kwargs: Any) -> dict[str, Any]:
        # `__init__` reads tokenizer.json itself (keeps added tokens, padding and truncation settings).
        return kwargs

    def update_post_processor(self) -> None:
        # The template is always "<cls> $A"; `add_bos_token` / `add_eos_token` do not apply.
        cls_id = self._tokenizer.token_to_id(CLS)
        self._tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{CLS} $A", pair=f"{CLS} $A $B:1", special_tokens=[(CLS, cls_id)]
        )

    # ----------------------------------------------------------------------------------------------
    # batched __call__ on plain sequences
    # ----------------------------------------------------------------------------------------------
    def _encode_plus(
        self,
        text: Any,
        text_pair: Any = None,
        add_special_tokens: bool = True,
        padding_strategy: PaddingStrategy = PaddingStrategy.DO_NOT_PAD,
        truncation_strategy: TruncationStrategy = TruncationStrategy.DO_NOT_TRUNCATE,
        max_length: int | None = None,
        stride: int = 0,
        is_split_into_words: bool = False,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors: Any = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
        verbose: bool = True,
        split_special_tokens: bool | None = None,
        **kwargs: Any,
    ) -> BatchEncoding:
        """Batches of plain sequences go through `encode_genome`; everything else through the Rust backend.

        The numpy path gives the same `input_ids` and `attention_mask` as the backend (the tests check it)
        and is several times faster on kb-long sequences. It is taken for a list of strings with no pair,
        no special-token text (no `<`), no added tokens, and none of offsets / overflow / special-tokens
        mask / length / token type ids requested. Its `BatchEncoding` carries no `encodings`, so
        `.tokens()` and `.word_ids()` are not available on it; `tokenize()` and single strings always use
        the backend.
        """
        n_special = 1 if add_special_tokens else 0
        if (
            self.numpy_batch_encode
            and isinstance(text, (list, tuple))
            and len(text) > 0
            and text_pair is None
            and not is_split_into_words
            and not (return_overflowing_tokens or return_special_tokens_mask)
            and not (return_offsets_mapping or return_length or return_token_type_ids)
            and not split_special_tokens
            and not kwargs
            and truncation_strategy
            in (
                TruncationStrategy.DO_NOT_TRUNCATE,
                TruncationStrategy.LONGEST_FIRST,
                TruncationStrategy.ONLY_FIRST,
            )
            and (
                truncation_strategy == TruncationStrategy.DO_NOT_TRUNCATE
                or (max_length is not None and max_length >= n_special)
            )
            and (padding_strategy != PaddingStrategy.MAX_LENGTH or max_length is not None)
            and self._tokenizer.get_vocab_size(with_added_tokens=True) == self._base_vocab_size
            and all(isinstance(t, str) and "<" not in t for t in text)
        ):
            return self._numpy_batch_encode(
                text,
                n_special,
                padding_strategy,
                truncation_strategy,
                max_length,
                pad_to_multiple_of,
                padding_side,
                return_tensors,
                return_attention_mask,
                verbose,
            )
        return super()._encode_plus(
            text,
            text_pair=text_pair,
            add_special_tokens=add_special_tokens,
            padding_strategy=padding_strategy,
            truncation_strategy=truncation_strategy,
            max_length=max_length,
            stride=stride,
            is_split_into_words=is_split_into_words,
            pad_to_multiple_of=pad_to_multiple_of,
            padding_side=padding_side,
            return_tensors=return_tensors,
            return_token_type_ids=return_token_type_ids,
            return_attention_mask=return_attention_mask,
            return_overflowing_tokens=return_overflowing_tokens,
            return_special_tokens_mask=return_special_tokens_mask,
            return_offsets_mapping=return_offsets_mapping,
            return_length=return_length,
            verbose=verbose,
            split_special_tokens=split_special_tokens,
            **kwargs,
        )

    def _numpy_batch_encode(
        self,
        texts: list[str],
        n_special: int,
        padding_strategy: PaddingStrategy,
        truncation_strategy: TruncationStrategy,
        max_length: int | None,
        pad_to_multiple_of: int | None,
        padding_side: str | None,
        return_tensors: Any,
        return_attention_mask: bool | None,
        verbose: bool,
    ) -> BatchEncoding:
        rows = [self.encode_genome(t) for t in texts]
        if truncation_strategy != TruncationStrategy.DO_NOT_TRUNCATE:
            limit = max_length - n_special
            if self.truncation_side == "left":
                rows = [r[r.size - limit :] if r.size > limit else r for r in rows]
            else:
                rows = [r[:limit] for r in rows]
        lengths = np.array([r.size + n_special for r in rows], dtype=np.int64)
        longest = int(lengths.max())
        if truncation_strategy == TruncationStrategy.DO_NOT_TRUNCATE:
            self._eventual_warn_about_too_long_sequence(range(longest), max_length, verbose)

        if padding_strategy == PaddingStrategy.LONGEST:
            width = longest
        elif padding_strategy == PaddingStrategy.MAX_LENGTH:
            width = max_length
        else:
            width = None
        if width is not None and pad_to_multiple_of:
            width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
        left = (padding_side or self.padding_side) == "left"
        cls_id = self.cls_token_id

        if width is not None and longest <= width:
            input_ids = np.full((len(rows), width), self.pad_token_id, dtype=np.int64)
            for i, (row, length) in enumerate(zip(rows, lengths)):
                start = width - int(length) if left else 0
                if n_special:
                    input_ids[i, start] = cls_id
                input_ids[i, start + n_special : start + int(length)] = row
            positions = np.arange(width)
            mask = positions >= width - lengths[:, None] if left else positions < lengths[:, None]
            attention_mask = mask.astype(np.int64)
            if return_tensors is None:
                input_ids, attention_mask = input_ids.tolist(), attention_mask.tolist()
        else:  # not padded, or a row longer than max_length: rows keep their own length
            pad = self.pad_token_id
            input_ids, attention_mask = [], []
            for row, length in zip(rows, lengths):
                ids = ([cls_id] if n_special else []) + row.tolist()
                n_pad = max(0, width - int(length)) if width is not None else 0
                input_ids.append([pad] * n_pad + ids if left else ids + [pad] * n_pad)
                ones = [1] * int(length)
                attention_mask.append([0] * n_pad + ones if left else ones + [0] * n_pad)

        data = {"input_ids": input_ids}
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        if return_attention_mask:
            data["attention_mask"] = attention_mask
        return BatchEncoding(data, tensor_type=return_tensors)

    # ----------------------------------------------------------------------------------------------
    # vocabulary views
    # ----------------------------------------------------------------------------------------------
    def _genome_tables(self) -> None:
        vocab = self._tokenizer.get_vocab(with_added_tokens=True)
        kmers = ("".join(p) for p in itertools.product(NUCLEOTIDES, repeat=self.k))
        self._kmer_ids = np.array([vocab[kmer] for kmer in kmers], dtype=np.int32)
        self._kmer_ids.setflags(write=False)
        self._nucleotide_ids = {base: vocab[base] for base in NUCLEOTIDES + "N"}
        # class code (see _CODE_*) -> id of the single-character token
        self._single_ids = np.array(
            [*(vocab[b] for b in NUCLEOTIDES), vocab["N"], vocab[UNK]], dtype=np.int32
        )
        id_to_token = {i: t for t, i in vocab.items()}
        special = {int(i) for i in self._tokenizer.get_added_tokens_decoder()}
        size = max(id_to_token) + 1
        self._decode_table = np.array([id_to_token.get(i, "") for i in range(size)], dtype=object)
        self._decode_table_no_special = self._decode_table.copy()
        self._decode_table_no_special[sorted(special)] = ""

    @property
    def kmer_ids(self) -> np.ndarray:
        """Ids of the `4**k` k-mers, shape (4**k,), in `itertools.product("ATCG", repeat=k)` order."""
        return self._kmer_ids

    @property
    def nucleotide_ids(self) -> dict[str, int]:
        """Ids of the single-nucleotide tokens `A T C G N`."""
        return dict(self._nucleotide_ids)

    # ----------------------------------------------------------------------------------------------
    # whole-genome path
    # ----------------------------------------------------------------------------------------------
    def encode_genome(self, seq: str | bytes | bytearray | memoryview) -> np.ndarray:
        """Tokenize a whole sequence (a chromosome) with numpy, without `<cls>`.

        Same ids as `self(seq)["input_ids"][1:]` for any sequence without special-token text, in a few
        vectorised passes over the bytes: a lookup table gives each byte its class (A/T/C/G digit, N,
        other, ignored), the runs of A/C/G/T between other characters give the k-mer boundaries, and each
        k-mer's base-4 code indexes `kmer_ids`.

        Args:
            seq: the sequence, as `str` or bytes-like (ASCII; a non-ASCII character is one `<unk>`).

        Returns:
            `np.ndarray` of int32 token ids, shape (num_tokens,).
        """
        if isinstance(seq, str):
            seq = seq.encode("ascii", errors="replace")  # one byte per character; non-ASCII -> "?" -> <unk>
        elif isinstance(seq, (bytearray, memoryview)):
            seq = bytes(seq)
        elif not isinstance(seq, bytes):
            raise TypeError(f"encode_genome expects str or bytes, got {type(seq).__name__}")
        codes = np.frombuffer(seq.translate(_BYTE_CLASSES, _WHITESPACE_BYTES), dtype=np.uint8)
        step = max(_GENOME_CHUNK // self.k, 1) * self.k
        pieces = []
        start, n = 0, codes.size
        while start < n:
            stop = min(start + step, n)
            if stop < n:
                stop = self._safe_cut(codes, start, stop)
            pieces.append(self._encode_codes(codes[start:stop]))
            start = stop
        if not pieces:
            return np.zeros(0, dtype=np.int32)
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def _safe_cut(self, codes: np.ndarray, start: int, stop: int) -> int:
        """A cut point in (start, stop] after which tokenization restarts exactly as in the full sequence.

        The chunk [start, cut) is tokenized alone, so the cut must not split a k-mer or turn the tail of a
        run into leftovers: it lies just after a non-base, or inside a run at a multiple of k from the run
        start. Chunks start at such points and span a multiple of k, so the cut is always after `start`.
        """
        nonbase = np.flatnonzero(codes[start:stop] >= _CODE_N)
        run_start = start + (int(nonbase[-1]) + 1 if nonbase.size else 0)
        return run_start + ((stop - run_start) // self.k) * self.k

    def _encode_codes(self, codes: np.ndarray) -> np.ndarray:
        """Tokenize class codes that start at a run boundary; see `encode_genome`.

        The input alternates between "k-mer regions" (the first `len // k * k` bases of a run) and "single
        regions" (the leftover bases of the run plus the non-base after it), and so does the output.
        """
        k, n = self.k, codes.size
        nonbase = np.flatnonzero(codes >= _CODE_N)
        if nonbase.size == 0:  # one run of A/C/G/T: k-mers, then the leftover bases
            full = (n // k) * k
            kmers = self._kmer_ids[_pack_kmers(codes[:full], k)]
            return np.concatenate([kmers, self._single_ids[codes[full:]]])

        # Run i covers [run_start[i], run_end[i]); every run but the last is followed by nonbase[i].
        run_start = np.concatenate(([0], nonbase + 1))
        run_end = np.append(nonbase, n)
        n_kmers = (run_end - run_start) // k
        single_start = run_start + n_kmers * k  # single region i: [single_start[i], single_end[i])
        n_single = np.append(nonbase + 1, n) - single_start
        total_single = int(n_single.sum())

        def ranges(starts: np.ndarray, counts: np.ndarray, total: int) -> np.ndarray:
            """Concatenation of arange(s, s + c) for s, c in zip(starts, counts)."""
            offsets = np.cumsum(counts) - counts
            return np.repeat(starts - offsets, counts) + np.arange(total)

        single_pos = ranges(single_start, n_single, total_single)
        in_kmer = np.ones(n, dtype=bool)
        in_kmer[single_pos] = False
        kmer_tokens = self._kmer_ids[_pack_kmers(codes[in_kmer], k)]
        single_tokens = self._single_ids[codes[single_pos]]

        # Output: per run, its k-mers then its single region.
        n_out = n_kmers + n_single
        single_out = ranges(np.cumsum(n_out) - n_out + n_kmers, n_single, total_single)
        ids = np.empty(int(n_out.sum()), dtype=np.int32)
        is_kmer_out = np.ones(ids.size, dtype=bool)
        is_kmer_out[single_out] = False
        ids[is_kmer_out] = kmer_tokens
        ids[single_out] = single_tokens
        return ids

    def decode_genome(self, ids: Any, skip_special_tokens: bool = True) -> str:
        """Inverse of `encode_genome`: concatenate the token strings of `ids`.

        Args:
            ids: token ids, any shape-(L,) sequence or array (e.g. `input_ids` with `<cls>` and padding).
            skip_special_tokens: drop `<cls>`, `<pad>`, `<mask>`, `<unk>`, ... (default); otherwise they
                appear as their token text.

        Returns:
            The sequence, upper case (lower case, IUPAC codes and `U` do not survive the round trip).
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if self._decode_table.size != len(self):  # tokens were added since __init__
            self._genome_tables()
        table = self._decode_table_no_special if skip_special_tokens else self._decode_table
        if ids.size and (ids.min() < 0 or ids.max() >= table.size):
            bad = ids[(ids < 0) | (ids >= table.size)][0]
            raise ValueError(f"token id {int(bad)} is outside the vocabulary (size {table.size})")
        return "".join(table[ids].tolist())


def layout_of_vocab_file(path: str | os.PathLike) -> tuple[str, int]:
    """The `(vocab_layout, k)` whose vocabulary is the token list of an NT `vocab.txt` (one token a line).

    Raises:
        ValueError: the file matches no layout.
    """
    with open(path, encoding="utf-8") as handle:
        tokens = [line.strip() for line in handle if line.strip()]
    kmers = [t for t in tokens if not t.startswith("<")]
    k = max((len(t) for t in kmers), default=0)
    for layout in VOCAB_LAYOUTS:
        if 1 <= k <= MAX_K and tokens == build_vocab(layout, k):
            return layout, k
    raise ValueError(
        f"{path}: {len(tokens)} tokens matching neither the nt-v1 nor the nt-v2 layout "
        f"(first tokens: {tokens[:8]})"
    )


def _pack_kmers(codes: np.ndarray, k: int) -> np.ndarray:
    """Base-4 index of consecutive k-mers: codes shape (m * k,) with digits 0..3 -> shape (m,) int32."""
    digits = codes.reshape(-1, k)
    index = digits[:, 0].astype(np.int32)
    for j in range(1, k):
        index <<= 2
        index |= digits[:, j]
    return index


def _check_backend_vocab(
    backend: Tokenizer, expected: list[str], vocab_layout: str, k: int, source: str | None
) -> None:
    vocab = backend.get_vocab(with_added_tokens=True)
    mismatch = [(i, t, vocab.get(t)) for i, t in enumerate(expected) if vocab.get(t) != i]
    if mismatch:
        i, token, found = mismatch[0]
        where = f" in {source}" if source else ""
        raise ValueError(
            f"tokenizer vocabulary{where} does not match vocab_layout={vocab_layout!r}, k={k}: "
            f"{token!r} should have id {i}, found {found} ({len(mismatch)} tokens differ)"
        )


def fit_model_max_length(tokenizer: Any, max_tokens: int) -> Any:
    """Give a tokenizer saved with a model that model's limit: ``model_max_length`` becomes ``max_tokens``
    (``GenoLMConfig.max_tokens``, ``<cls>`` included) unless it already holds a smaller value, so that
    ``truncation=True`` and ``pipeline(...)`` cut inputs to what the positions cover. Returns ``tokenizer``."""
    current = tokenizer.model_max_length
    if current is None or current > max_tokens:
        tokenizer.model_max_length = int(max_tokens)
    return tokenizer
