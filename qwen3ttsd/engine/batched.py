"""The batched step engine: continuous batching of concurrent streams, no HF ``generate``.

Why: every frame of every stream runs the talker once and the code predictor 15 times.
At batch 1 both are matrix-vector work whose cost is reading the weights (and, for small
models, Python/HF overhead), so stepping B streams together costs little more than one.

How one ``step()`` goes (all active rows together):

1. the code predictor completes each row's pending frame: its 2-token prefill (the
   talker's last hidden state + the embedding of codebook 0) and 14 single-token steps,
   batched across rows (every row has the same length here, so no mask is needed);
2. each row's frame goes to its own audio chunker / streaming decoder; rows that hit
   their frame cap or were cancelled leave now;
3. one batched talker forward: each row's input is the sum of its frame's 16 codebook
   embeddings plus its next trailing text vector (or ``tts_pad``), at its own position,
   over its own KV cache (rows of different lengths share one tensor, masked);
4. codebook 0 of the next frame is sampled per row; rows sampling EOS leave.

Newcomers are prefilled together at the start of the next step (one right-padded talker
forward for a burst of calls) and step with the rest from then on. Prompts are qwen-tts's
(:mod:`.prompt`): by default the project's builder, run off the engine thread on a small
pool (an admission costs the engine thread a job submission and, when the prompt is ready,
a row's setup; a prompt submitted just before a step is taken at its end, so it starts as
early as an inline one would), or with ``prompts="qwen-tts"`` qwen-tts's own ``generate``
captured inline (the old path; it patches the shared model, so never off the thread). The
logits rules are HF ``generate``'s, per row: repetition penalty
on the row's generated codebook-0 ids, ``min_new_tokens`` (EOS masked), suppressed ids,
then :mod:`.sampling` with the row's own ``torch.Generator`` (seeded from the request's
seed), so a seeded request gives qwen-tts's own codes on the same kernels (CPU fp32:
bitwise, tested; the fused layers of :mod:`.lean` differ from qwen-tts's modules only in
float rounding).

GPU: when every row completes a frame and steps the talker (no row waits for text), the
whole step - predictor, talker, logits rules, sampling - is one static call per batch
bucket (:mod:`.static_step`), replayed from a CUDA graph (:mod:`.cuda_graphs`); the steps
above are its dynamic form (CPU, rows waiting for text, more than 64 rows). Attention always
goes through SDPA (masks need it), whatever attention kernel the checkpoint was loaded with.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import Cancelled, TTSError
from .backend import Audio, BackendOptions, Failed, Stream, int4_rows, internal_error, quant_setting
from .codec_lane import CodecLane, Leaving, cpu_threads, overlap_by_default
from .codec_quant import codec_precision
from .engine import AudioOut, Engine, warmup_request
from .host_sync import HostRead
from .int4 import attach_int4
from .kv_cache import RowKV
from .lean import (
    LeanLayer,
    Norm,
    alone_spans,
    dense,
    int8_obstacle,
    int8_rows,
    lean_layers,
    rope_tables,
    serving_int8,
)
from .loader import derived
from .predictor_loop import StaticStepKV
from .prewarm import Prewarm, codec_shapes
from .prompt import Prompt, build_prompt, own_prompt, prompt_builder
from .sampling import NEG_INF, Sampler, Sampling, row_generator
from .static_step import static_step
from .text_rows import TextRows, streaming
from .thread_priority import on_own_team, pin_torch_threads

log = logging.getLogger("qwen3ttsd.engine")

# Where prompts come from: the project's builder (default: no qwen-tts code per request,
# off the engine thread, bitwise the same prompts) or qwen-tts's own generate, captured.
PROMPT_SOURCES = ("own", "qwen-tts")
PROMPT_THREADS = 2  # builds are ~0.1-1 ms; two, so a clone voice's first registration blocks no other


def _lean(model: Any) -> list:
    """The model's layers as :class:`LeanLayer` s, built once per loaded model."""
    return derived(model, "_qwen3ttsd_lean", lambda: lean_layers(model.layers))


# --- rows ------------------------------------------------------------------------------


class Row:
    """One stream's generation state."""

    def __init__(self, stream: Stream, prompt: Prompt, out: AudioOut, gen: torch.Generator,
                 vocab: int, device) -> None:
        s = prompt.settings
        self.stream = stream
        self.prompt = prompt
        self.out = out
        self.gen = gen
        self.seeded = stream.request.seed is not None  # int8: computed as if alone (lean.Int8Rows)
        self.talk = Sampling.of(s)
        self.sub = Sampling.of(s, "subtalker_")
        self.penalty = float(s.get("repetition_penalty") or 1.0)
        self.min_new = int(s.get("min_new_tokens") or 0)
        self.cap = int(s["max_new_tokens"]) - 1   # qwen-tts never expands the last token
        self.seen = torch.zeros(vocab, dtype=torch.bool, device=device)
        self.frames = 0           # frames completed (the lane may not have added them yet)
        self.sampled = 0          # codebook-0 tokens sampled so far
        self.length = 0           # tokens in this row's talker cache
        self.c0 = -1              # sampled, not yet expanded into a frame
        self.hidden: Tensor | None = None   # (1, 1, D) talker output for the pending token
        self.frame: Tensor | None = None    # (16,) the last completed frame
        self.pending = False      # c0 sampled, its frame not yet completed (else: waiting for text)
        self.waiting_since: float | None = None  # since when it waits for streamed text (text_rows.quiet)

    def text(self) -> Tensor:
        """The text vector that goes with the last completed frame (qwen-tts's
        ``trailing_text_hidden[generation_step]``, then ``tts_pad``)."""
        k = self.frames - 1
        tr = self.prompt.trailing
        return tr[k] if k < tr.shape[0] else self.prompt.pad


class BatchedBackend:
    """Continuous batching over one loaded :class:`Engine` (see module docstring)."""

    def __init__(self, engine: Engine, options: BackendOptions = BackendOptions()) -> None:
        """``options.batch_decode``: decode all due rows' frames in one codec call per step.
        Faster with many streams, but batched kernels round differently from single ones, so
        a seeded request's PCM bytes then depend on what else was running (codes do not).
        ``overlap_decode``: run the codec on its own thread, alongside the next step
        (:class:`CodecLane`; CPU only; None: where the core count pays for it).
        ``prewarm_frames``: build the codec's kernels for the batch shapes of chunks of up
        to that many frames on an idle-priority thread (:mod:`.prewarm`; CPU, batched
        decode only)."""
        self.engine = engine
        self.capacity = max(1, int(options.max_batch))
        self._cp_rope: list[tuple[Tensor, Tensor]] | None = None
        m = engine.serving_model
        self.model = m
        self.talker = m.talker
        self.predictor = m.talker.code_predictor
        tc = m.config.talker_config
        self.vocab = int(tc.vocab_size)
        self.eos = int(tc.codec_eos_token_id)
        self.groups = int(tc.num_code_groups)
        self.step_kv = StaticStepKV(self.groups + 1)  # the predictor's cache, reused every frame
        self.device = self.talker.device
        self.dtype = self.talker.dtype
        attn = self.talker.model.layers[0].self_attn
        self.kv = RowKV(len(self.talker.model.layers), tc.num_key_value_heads, attn.head_dim,
                        self.dtype, self.device)
        self.talker_layers = _lean(self.talker.model)
        self.predictor_layers = _lean(self.predictor.model)
        self.talker_norm = Norm.of(self.talker.model.norm)
        self.predictor_norm = Norm.of(self.predictor.model.norm)
        self.codec_head = dense(self.talker.codec_head)
        self.lm_heads = [dense(head) for head in self.predictor.lm_head]
        # codebook embeddings as plain tables: codebook 0's (the talker's), then 1..15's
        self.code_tables = [self.talker.get_input_embeddings().weight.detach()]
        self.code_tables += [e.weight.detach() for e in self.predictor.get_input_embeddings()]
        self.to_predictor = dense(self.predictor.small_to_mtp_projection)
        self.cache_writer: Any = None   # the thread writing the weight cache after a miss (engine/weight_cache.py)
        self._store_cache: Any = None
        self._cached: Any = None        # the weight cache whose int8 weights are still packing (_settle_weights)
        self.quant = self._serving_quant(options.quant)
        if self.quant == "int8":
            self._use_int8(options.quant)
        elif "_qwen3ttsd_fp32_released" in m.__dict__ or getattr(getattr(engine, "weight_cache", None), "hit", False):
            raise TTSError("internal", "this model serves int8: its fp32 linears were released")
        codec_precision(self.engine.new_decoder().decoder, options.codec_quant, self.device)
        overlap = overlap_by_default(cpu_threads()) if options.overlap_decode is None else options.overlap_decode
        self.lane = CodecLane(overlap and self.device.type == "cpu" and cpu_threads() > 1, options.batch_decode)
        self.rows: list[Row] = []
        self._leaving: list[tuple[Row, TTSError | None]] = []
        self._newcomers: list[Row] = []   # admitted, prefilled at the next step
        self._suppress_cache: dict[tuple, Tensor] = {}
        self.static = static_step(self, options.cuda_graphs)  # the bucketed static step (+ CUDA graphs)
        self.host = HostRead(self.device)  # the step's one device -> host read (:mod:`.host_sync`)
        self.prompts = options.prompts
        if self.prompts not in PROMPT_SOURCES:
            raise TTSError("bad_request", f"unknown prompt source {self.prompts!r} (supported: {PROMPT_SOURCES})")
        if self.prompts == "qwen-tts" and engine.tts is None:
            raise TTSError("bad_request", "prompts='qwen-tts' needs qwen-tts's model (weights='qwen_tts')")
        self._building: deque[tuple[Stream, Future]] = deque()
        self.text = TextRows(engine)   # streams whose text arrives while they run (text_rows.py)
        self._pool: ThreadPoolExecutor | None = None
        if self.prompts == "own":
            with torch.inference_mode():
                prompt_builder(engine)  # at load, not on a request
                self.engine.new_decoder().push(torch.zeros(1, self.groups, dtype=torch.long, device=self.device))
                # ^ the codec's derived state exists before a builder thread primes a clone's decoder
        self.prewarm: Prewarm | None = None
        if options.prewarm_frames > 0 and options.batch_decode and self.device.type == "cpu":
            self.prewarm = Prewarm(self, codec_shapes(self.capacity, options.prewarm_frames), self.lane.threads)
        if self._store_cache is not None:
            self.cache_writer = self._store_cache()

    @property
    def active(self) -> int:
        """Rows generating, plus any whose audio work or final report is still pending."""
        return self.occupied + len(self.text.parked)

    @property
    def occupied(self) -> int:
        """What counts against ``capacity``: :attr:`active` less the streamed turns parked
        until their text can start them (they hold no slot; they start as slots free)."""
        return (len(self.rows) + len(self._newcomers) + len(self._building) + len(self._leaving)
                + int(self.lane.busy))

    @property
    def status(self) -> dict[str, Any]:
        return {"kind": "batched", "capacity": self.capacity, "quant": self.quant or None,
                "int4_rows": self.int4_rows,
                "batch_decode": self.lane.batch_decode, "overlap_decode": self.lane.overlaps,
                "threads": self.lane.split,
                "codec_prewarm": self.prewarm.status if self.prewarm else None}

    def warmup(self) -> None:
        """One 2-frame stream through this backend's own path: builds the kernels the first
        request would otherwise pay for."""
        req = warmup_request(self.engine)
        if req is None:
            return
        failed: list[Failed] = []
        self.admit(Stream(req, sink=lambda ev: failed.append(ev) if isinstance(ev, Failed) else None))
        while self.active:
            self.step()
        if failed:
            raise failed[0].error

    def _serving_quant(self, setting: str) -> str:
        """"int8" or "" (see :func:`.lean.serving_int8`); where a setting asking for int8
        is not served as int8, the log says why."""
        try:
            setting = quant_setting(setting)
            if serving_int8(setting, self.device.type, self.dtype):
                log.info("serving int8 linears on %s (QWEN3TTSD_QUANT=%s)", self.device, setting)
                return "int8"
        except ValueError as e:
            raise TTSError("bad_request", str(e)) from None
        if setting == "int8":
            log.warning("QWEN3TTSD_QUANT=int8 is a CPU option; serving unquantized on %s", self.device)
        elif setting == "auto" and self.device.type == "cpu":
            log.warning("%s: serving %s linears", int8_obstacle(self.dtype), str(self.dtype).removeprefix("torch."))
        else:
            log.info("serving unquantized linears on %s (QWEN3TTSD_QUANT=%s)", self.device, setting)
        return ""

    def _use_int8(self, setting: str) -> None:
        """int8 weights for the talker's and predictor's linears (CPU: memory-bound matrix-
        vector products read 4x fewer bytes), and the predictor's int4 copies for small
        batches where they pay (:mod:`.int4`). Embeddings, norms and the codec stay fp32.
        Built once per loaded model, and then the fp32 linears are freed: qwen-tts's own
        talker modules can no longer run (a loaded model has one backend)."""
        from .weight_cache import from_cache_or, store_when_idle

        fp32_layers = self.talker_layers + self.predictor_layers
        cache = getattr(self.engine, "weight_cache", None)
        self.talker_layers, self.predictor_layers, codec_head, lm_heads = derived(
            self.model, "_qwen3ttsd_int8", lambda: from_cache_or(cache, lambda: self._quantized(setting)))
        self.codec_head, self.lm_heads = dense(codec_head), [dense(head) for head in lm_heads]
        self._log_int4(setting)
        derived(self.model, "_qwen3ttsd_fp32_released", lambda: self._release_fp32(fp32_layers))
        if cache is not None and cache.hit:
            self._cached = cache
        if cache is not None and not cache.hit:
            self._store_cache = lambda: store_when_idle(cache, self, "_qwen3ttsd_int8", self.talker)

    @property
    def int4_rows(self) -> int:
        """Up to how many rows the predictor's int4 copies serve (0: none; :mod:`.int4`)."""
        return max((layer.small_rows for layer in self.predictor_layers), default=0)

    def _log_int4(self, setting: str) -> None:
        """What QWEN3TTSD_QUANT=int4 serves, built now or read from the weight cache."""
        if self.int4_rows:
            log.info("predictor: int4 copies serve batches of up to %d rows", self.int4_rows)
        elif int4_rows(setting) is None:
            log.info("QWEN3TTSD_QUANT=int4: not served (not faster than int8 on this CPU, or the kernel "
                     "does not take this model's shapes): int8 alone")

    def _quantized(self, setting: str) -> tuple[list[LeanLayer], list[LeanLayer], torch.nn.Module, list]:
        """The int8 structure :meth:`_use_int8` serves and the weight cache keeps."""
        from .lean import quantize_int8

        predictor = [layer.int8() for layer in self.predictor_layers]
        rows = int4_rows(setting)
        if rows != 0:   # (QUANT=int4: quantized and timed on every core, on a team that ends with it)
            on_own_team(cpu_threads(), None, lambda: attach_int4(predictor, self.predictor_layers, rows))
        return ([layer.int8() for layer in self.talker_layers], predictor,
                quantize_int8(self.talker.codec_head), list(quantize_int8(self.predictor.lm_head)))

    def _release_fp32(self, fp32_layers: list) -> bool:
        """The int8 copies serve: free the fp32 linears they were made from (issue 19)."""
        from .serving_size import release_linears, trim_heap

        hf_layers = [*self.talker.model.layers, *self.predictor.model.layers]
        release_linears(m for layer in hf_layers for m in layer.modules() if type(m) is torch.nn.Linear)
        release_linears([self.talker.codec_head, *self.predictor.lm_head])
        for layer in fp32_layers:
            release_linears([layer.qkv, layer.gate_up])
            layer._bind()  # drop the fp32 layer's own references to the freed weights
        trim_heap()
        return True

    # --- admission -------------------------------------------------------------------

    def admit(self, stream: Stream) -> None:
        """Register the stream's voice, build its prompt and pick its codec stream; it is
        prefilled at the next step, together with the other newcomers. With the project's
        prompts, the voice and prompt are done on the builder pool (:meth:`_take_built`)."""
        try:
            if stream.cancel.is_set():
                raise Cancelled()
            if not self.engine.loaded:
                raise TTSError("unavailable", "model not loaded")
            if streaming(stream):
                if self.prompts != "own":
                    raise TTSError("unsupported", "streamed text needs the project's prompts (prompts='own')")
                self.text.park(stream)  # built once its text can start it (_start_texts)
                return
            if self.prompts == "own":
                self._building.append((stream, self._builder_pool().submit(self._prompt, stream)))
                return
            with torch.inference_mode():
                self._join(stream, self._prompt(stream))
        except BaseException as e:  # noqa: BLE001 - reported to the stream
            stream.sink(Failed(internal_error(e)))

    def _builder_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(PROMPT_THREADS, thread_name_prefix="qwen3ttsd-prompt",
                                            initializer=pin_torch_threads, initargs=(1,))
        return self._pool

    def _prompt(self, stream: Stream) -> Prompt:
        """The stream's voice registered and its prompt (a builder thread for own prompts)."""
        if stream.voice is not None:  # a clone's first registration encodes its reference and
            # primes the codec with it: on every core, on a team that ends with it (builder
            # threads keep none: engine/thread_priority.py)
            on_own_team(cpu_threads(), None, lambda: self.engine.use_voice(stream.voice))
        if streaming(stream):
            voice = self.engine._voices.get(stream.request.voice or "") if stream.voice is not None else None
            return self.text.prompt(stream, voice)
        make = own_prompt if self.prompts == "own" else build_prompt
        return make(self.engine, stream.request)

    def _start_texts(self) -> None:
        """Streamed-text streams whose text can start them go to the builder pool."""
        room = self.capacity - (len(self.rows) + len(self._newcomers) + len(self._building))
        for stream in self.text.starting(room):
            self._building.append((stream, self._builder_pool().submit(self._prompt, stream)))

    def _take_built(self, wait: bool) -> None:
        """Streams whose prompts are built join the newcomers (all of them, once built, when
        ``wait``); a failed build fails its stream."""
        pending: deque[tuple[Stream, Future]] = deque()
        while self._building:
            stream, job = self._building.popleft()
            if not wait and not job.done():
                pending.append((stream, job))
                continue
            try:
                prompt = job.result()
                with torch.inference_mode():
                    self._join(stream, prompt)
            except BaseException as e:  # noqa: BLE001 - reported to the stream
                stream.sink(Failed(internal_error(e)))
        self._building = pending

    def _join(self, stream: Stream, prompt: Prompt) -> None:
        """A stream with its prompt becomes a newcomer: its codec stream, generator, row."""
        if stream.continues is not None:
            self.lane.join()  # it may continue a decoder the lane is still using
        req = stream.request
        codec = self.engine.start_decoder(self.engine.continuable(stream.continues), prompt.voice)
        out = AudioOut(codec, req, lambda pcm: stream.sink(Audio(pcm)), stream.on_codes)
        gen = row_generator(self.device, req.seed)
        self._newcomers.append(Row(stream, prompt, out, gen, self.vocab, self.device))

    def _prefill_newcomers(self) -> None:
        """All rows admitted since the last step, in one talker forward: a burst of calls
        pays for one prefill, not one each."""
        rows: list[Row] = []
        for r in self._newcomers:
            if r.stream.cancel.is_set():
                self._leaving.append((r, Cancelled()))  # never got a slot
            else:
                rows.append(r)
        self._newcomers = []
        if not rows:
            return
        slot = len(self.rows)
        lengths = [r.prompt.embeds.shape[1] for r in rows]
        self.kv.reserve(slot + len(rows), max(n + (r.cap + 1 if r.cap < 512 else 512)
                                              for n, r in zip(lengths, rows)))
        try:
            for group in self._prefill_groups(rows):
                logits, hidden = self.prefill(slot, [r.prompt.embeds for r in group])
                for r in group:
                    r.length = r.prompt.embeds.shape[1]
                self.rows.extend(group)
                self._take_c0(group, logits, hidden)
                slot += len(group)
        except BaseException:
            placed = {id(r) for r in self.rows}   # the rest are newcomers again: abort_all reports them
            self._newcomers = [r for r in rows if id(r) not in placed]
            raise

    def _prefill_groups(self, rows: list[Row]) -> list[list[Row]]:
        """The newcomers prefilled together: all of them, but with int8 each seeded row
        alone (padded to the others' length its activations' scale would change)."""
        if not self.quant or not any(r.seeded for r in rows):
            return [rows]
        return [[r] for r in rows if r.seeded] + ([others] if (others := [r for r in rows if not r.seeded]) else [])

    def _as_if_alone(self, rows: list[Row]) -> contextlib.AbstractContextManager:
        """int8: each seeded row's activations quantized on their own (:class:`.lean.Int8Rows`)."""
        return int8_rows(alone_spans([r.seeded for r in rows]) if self.quant else None)

    def prefill(self, slot: int, prompts: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Run prompts (1, L_i, D) into slots ``slot``, ``slot + 1``, ...: right-padded into
        one batch, causal attention (a row never sees the padding after it). Each row's
        logits (P, V) and hidden state (P, 1, D) at its last prompt position."""
        lengths = [p.shape[1] for p in prompts]
        n = max(lengths)
        embeds = torch.cat([F.pad(p, (0, 0, 0, n - p.shape[1])) for p in prompts])
        pos = torch.arange(n, device=self.device).view(1, 1, n).expand(3, 1, n)
        self.kv.for_prefill(slot)
        hidden = self._talker_layers(embeds, pos, mask=None)
        last = hidden[torch.arange(len(prompts), device=self.device),
                      torch.tensor(lengths, device=self.device) - 1].unsqueeze(1)
        return self.codec_head(last)[:, -1].float(), last

    # --- stepping --------------------------------------------------------------------

    def step(self) -> None:
        if not self.active:
            return
        try:
            with torch.inference_mode():
                self._step()
        except BaseException as e:  # noqa: BLE001 - one failure fails the batch, not the thread
            self.abort_all(internal_error(e))

    def _settle_weights(self) -> None:
        """A cold start's int8 weights from the weight cache, still being packed for fbgemm:
        unseeded rows are served from the plain weights meanwhile (``lean.unpacked_int8``);
        with a seeded row the step waits for the packing (its codes are fbgemm's, whenever
        it runs). Once packed, the packed objects are put in place."""
        if any(r.seeded for r in (*self.rows, *self._newcomers)):
            self._cached.packed()
        if self._cached.settled():
            self._cached = None

    def _step(self) -> None:
        if self.text.parked:
            self._start_texts()
        self._take_built(wait=not self.rows)  # idle: nothing to overlap a build with
        if self._cached is not None:
            self._settle_weights()
        if self._newcomers:
            self._prefill_newcomers()
        self._drop_cancelled()
        if not self.rows:  # only audio work and reports left
            self.lane.submit([], self._take_leaving())
            self.lane.join()
            if self.text.parked and not self._building:
                self.text.idle()  # parked turns wait for text: don't spin
            return
        self.text.feed(self.rows)
        self.text.quiet(self.rows)
        if self.static is not None and self.static.takes(self.rows):
            self._static_step()
            return
        rows = [r for r in self.rows if r.pending]  # the others wait for their next text
        work = []
        if rows:
            c0 = torch.tensor([r.c0 for r in rows], device=self.device)
            past = torch.cat([r.hidden for r in rows], dim=0)
            sub = Sampler([r.sub for r in rows], [r.gen for r in rows], self.predictor.vocab_size, self.device)
            with self._as_if_alone(rows):
                codes = self.predict(past, c0, lambda j, logits: sub(logits))
            frames = torch.cat([c0.unsqueeze(1), codes], dim=1)
            for r, frame in zip(rows, frames):
                r.frame = frame
                r.frames += 1
                r.pending = False
                work.append((r.out, frame))
            self._leave_capped(rows)
        self._drop_cancelled()
        self.lane.submit(work, self._take_leaving())  # decodes while the talker steps on
        self.lane.deliver()
        if not self.rows:
            return
        rows = [r for r in self.rows if self.text.ready(r)]
        if not rows:
            if not work:
                self.text.idle()  # every row waits for text
            return
        slots = None if len(rows) == len(self.rows) else [self.rows.index(r) for r in rows]
        with self._as_if_alone(rows):
            logits, hidden = self.talker_step(torch.stack([r.frame for r in rows]),
                                              torch.stack([r.text() for r in rows]), [r.length for r in rows],
                                              slots)
        for r in rows:
            r.length += 1
        self._take_c0(rows, logits, hidden)
        self._take_built(wait=False)  # built during this step: prefilled at the next

    def _static_step(self) -> None:
        """The step as one static call (:mod:`.static_step`, a CUDA graph replay on CUDA):
        every row completes its frame, steps the talker and samples its next codebook 0;
        the rows that leave with this frame (frame cap, cancel) ignore the rest."""
        rows = list(self.rows)
        for r in rows:
            r.frames += 1   # first: a row's text vector goes with its new frame (Row.text)
        assert self.static is not None
        frames, ids, hidden = self.static.step(rows)
        work = []
        for r, frame in zip(rows, frames):
            r.frame, r.pending = frame, False
            r.length += 1
            work.append((r.out, frame))
        self._leave_capped(rows)
        self._drop_cancelled()
        self.lane.submit(work, self._take_leaving())
        self.lane.deliver()
        tokens = self.host.ints(ids)
        self._took_c0([(r, tok, hidden[i:i + 1]) for i, (r, tok) in enumerate(zip(rows, tokens)) if r in self.rows])
        self._take_built(wait=False)

    def _leave_capped(self, rows: list[Row]) -> None:
        for r in list(rows):
            if r.frames >= r.cap:
                r.out.stats.hit_frame_cap = True
                self._leave(r)

    def predict(self, past_hidden: Tensor, c0: Tensor, pick) -> Tensor:
        """Codebooks 1..15 for each row (B, 15): ``pick(j, logits (B, V)) -> ids (B,)``."""
        tables, project = self.code_tables, self.to_predictor
        x = project(torch.cat([past_hidden, F.embedding(c0, tables[0]).unsqueeze(1)], dim=1))
        ropes = self._predictor_ropes(x)
        b, t, d = x.shape
        cache = self.step_kv.start(b, x)
        h = x.view(b * t, d)  # the layers' rows (LeanLayer.rows): no views between layers
        out: list[Tensor] = []
        for j in range(self.groups - 1):
            if j > 0:  # one token a row: the embeddings are the rows
                h, t = project(F.embedding(out[-1], tables[j])), 1
            cos, sin = ropes[j]
            for layer in self.predictor_layers:
                h = layer.rows(h, b, t, cos, sin, cache, None)
            logits = self.lm_heads[j](self.predictor_norm(h if t == 1 else h.view(b, t, d)[:, -1]))
            out.append(pick(j, logits if logits.dtype == torch.float32 else logits.float()))
        return torch.stack(out, dim=1)

    def _predictor_ropes(self, like: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Rope tables of each predictor step: positions 0-1 (the prefill), then 2, 3, ...
        (the same for every frame, so built once)."""
        if self._cp_rope is None or self._cp_rope[0][0].dtype != like.dtype:
            pos = torch.arange(self.groups, device=self.device).unsqueeze(0)
            cos, sin = rope_tables(*self.predictor.model.rotary_emb(like, pos))
            spans = [(0, 2)] + [(j + 1, j + 2) for j in range(1, self.groups - 1)]
            self._cp_rope = [(cos[:, :, a:b], sin[:, :, a:b]) for a, b in spans]
        return self._cp_rope

    def talker_step(self, frames: Tensor, text: Tensor, lengths: list[int],
                    slots: list[int] | None = None) -> tuple[Tensor, Tensor]:
        """One talker forward for B rows: input = the sum of each row's frame (B, 16)
        embeddings + its text vector (B, D), at position ``lengths[b]`` of its cache
        (the rows in slots 0..B-1, or in ``slots`` when some rows wait for text)."""
        parts = [F.embedding(frames[:, i:i + 1], table) for i, table in enumerate(self.code_tables)]
        x = torch.cat(parts, dim=1).sum(1, keepdim=True) + text.unsqueeze(1)
        span = max(lengths) + 1
        self.kv.reserve(max(slots) + 1 if slots else len(lengths), span)
        pos = torch.tensor(lengths, device=self.device)
        self.kv.for_decode(pos, span, None if slots is None else torch.tensor(slots, device=self.device))
        mask = None
        if min(lengths) != max(lengths):
            mask = (torch.arange(span, device=self.device).unsqueeze(0) <= pos.unsqueeze(1))[:, None, None, :]
        hidden = self._talker_layers(x, pos.view(1, -1, 1).expand(3, -1, 1), mask)
        return self.codec_head(hidden)[:, -1].float(), hidden

    def _talker_layers(self, x: Tensor, position_ids: Tensor, mask: Tensor | None) -> Tensor:
        tm = self.talker.model
        cos, sin = tm.rotary_emb(x, position_ids)
        cos, sin = rope_tables(cos[0], sin[0])  # speech positions: the 3 mrope components are equal
        for layer in self.talker_layers:
            x = layer(x, cos, sin, self.kv, mask)
        return self.talker_norm(x)

    def _take_c0(self, rows: list[Row], logits: Tensor, hidden: Tensor) -> None:
        """Apply the talker's logits rules and sample codebook 0 of each row's next frame."""
        logits = self.talker_rules(rows, logits)
        ids = self.host.ints(Sampler([r.talk for r in rows], [r.gen for r in rows], self.vocab, self.device)(logits))
        self._took_c0([(r, tok, hidden[i:i + 1]) for i, (r, tok) in enumerate(zip(rows, ids))])

    def _took_c0(self, sampled: list[tuple[Row, int, Tensor]]) -> None:
        """Each row's sampled codebook 0 (with the talker's hidden state for it): EOS
        leaves, else it is the row's next frame's."""
        for r, tok, hidden in sampled:
            r.sampled += 1
            r.seen[tok].fill_(True)  # a fill kernel: `seen[tok] = True` copies a host scalar up (a CUDA stream sync)
            if tok == self.eos:
                self._leave(r)
                continue
            r.c0 = tok
            r.pending = True
            r.hidden = hidden

    def talker_rules(self, rows: list[Row], logits: Tensor) -> Tensor:
        """HF's logits processors in HF's order: repetition penalty, min_new_tokens, suppress."""
        pen = [r.penalty for r in rows]
        if any(p != 1.0 for p in pen):
            p = torch.tensor(pen, device=logits.device, dtype=logits.dtype).unsqueeze(1)
            seen = torch.stack([r.seen for r in rows])
            logits = torch.where(seen, torch.where(logits < 0, logits * p, logits / p), logits)
        early = [r.sampled < r.min_new for r in rows]
        if any(early):
            logits = logits.clone()  # a column select, not a boolean index: no host sync
            eos = logits[:, self.eos]
            logits[:, self.eos] = torch.where(torch.tensor(early, device=logits.device), NEG_INF, eos)
        suppress = self._suppress_mask(tuple(rows[0].prompt.settings.get("suppress_tokens") or ()))
        if suppress is not None:
            logits = logits.masked_fill(suppress, NEG_INF)
        return logits

    def _suppress_mask(self, ids: tuple) -> Tensor | None:
        if not ids:
            return None
        m = self._suppress_cache.get(ids)
        if m is None:
            m = torch.zeros(self.vocab, dtype=torch.bool, device=self.device)
            m[list(ids)] = True
            self._suppress_cache[ids] = m
        return m

    # --- leaving ---------------------------------------------------------------------

    def _drop_cancelled(self) -> None:
        for r in list(self.rows):
            if r.stream.cancel.is_set():
                self._leave(r, Cancelled())

    def _leave(self, row: Row, err: TTSError | None = None) -> None:
        """Row leaves the batch now (the last row moves into its slot); its last flush and
        report go with the next lane job, after its earlier audio."""
        i = self.rows.index(row)
        last = len(self.rows) - 1
        if i != last:
            self.kv.move(last, i)
            self.rows[i] = self.rows[last]
        self.rows.pop()
        if not self.rows:
            self.kv.clear()  # sized by the longest rows of a busy spell: do not keep it
        self._leaving.append((row, err))

    def _take_leaving(self) -> list[Leaving]:
        leaving, self._leaving = self._leaving, []
        return [(r.stream, r.out, err) for r, err in leaving]

    def abort_all(self, err: TTSError) -> None:
        self._take_built(wait=True)
        rows, self.rows = self.rows + self._newcomers, []
        self._newcomers = []
        for stream in self.text.parked:
            stream.sink(Failed(err))
        self.text.parked = []
        self.kv.clear()
        leaving = self._take_leaving() + [(r.stream, r.out, err) for r in rows]
        self.lane.drain()
        self.lane.submit([], leaving)
        self.lane.drain()


__all__ = ["BatchedBackend"]
