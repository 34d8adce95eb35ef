"""In-process llama-cpp-python baselines, run in a child process of the benchmark:

    python -m bench.rawloop single   MODEL ROUNDS THREADS        # (a) one stream, high-level API
    python -m bench.rawloop multiseq MODEL N ROUNDS THREADS      # (d) bare N-sequence loop

(a) streams completions from llama-cpp-python's `Llama` one after another: the ceiling
for one stream. (d) decodes N sequences with the low-level API, one `llama_decode` per
step holding the next token of every sequence, greedy sampling of each output row: the
ceiling for N concurrent streams. Both print one JSON object on stdout with the same
request records as the HTTP load client, so the report treats every contender alike.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import llama_cpp

from bench.prompts import MAX_TOKENS, prompt_for

N_CTX_SEQ = 2048
N_BATCH = 512


def single(model: str, rounds: int, threads: int) -> dict[str, Any]:
    llm = llama_cpp.Llama(
        model_path=model,
        n_ctx=N_CTX_SEQ,
        n_batch=N_BATCH,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    records = []
    started = time.perf_counter()
    for r in range(rounds):
        t0 = time.perf_counter()
        stamps: list[float] = []
        finish = None
        for chunk in llm.create_completion(
            prompt_for(0, r), max_tokens=MAX_TOKENS, temperature=0.0, stream=True
        ):
            choice = chunk["choices"][0]
            if choice["text"]:
                stamps.append(time.perf_counter() - t0)
            finish = choice.get("finish_reason") or finish
        records.append(
            {
                "start": t0 - started,
                "stamps": stamps,
                "tokens": len(stamps),
                "finish_reason": finish,
                "done": True,
            }
        )
    return {"wall": time.perf_counter() - started, "records": records}


def multiseq(model: str, n: int, rounds: int, threads: int) -> dict[str, Any]:
    llama_cpp.llama_backend_init()
    mparams = llama_cpp.llama_model_default_params()
    mptr = llama_cpp.llama_model_load_from_file(model.encode(), mparams)
    vocab = llama_cpp.llama_model_get_vocab(mptr)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = n * N_CTX_SEQ
    cparams.n_batch = cparams.n_ubatch = N_BATCH
    cparams.n_seq_max = n
    cparams.kv_unified = True
    cparams.n_threads = cparams.n_threads_batch = threads
    cparams.no_perf = True
    ctx = llama_cpp.llama_init_from_model(mptr, cparams)
    mem = llama_cpp.llama_get_memory(ctx)
    batch = llama_cpp.llama_batch_init(N_BATCH, 0, 1)
    greedy = llama_cpp.llama_sampler_init_greedy()

    def tokenize(text: str) -> list[int]:
        data = text.encode()
        buf = (llama_cpp.llama_token * (len(data) + 8))()
        k = llama_cpp.llama_tokenize(vocab, data, len(data), buf, len(buf), True, True)
        return list(buf[:k])

    def decode(entries: list[tuple[int, int, int, bool]]) -> None:
        for i, (tok, pos, seq, logits) in enumerate(entries):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, pos, 1
            batch.seq_id[i][0], batch.logits[i] = seq, logits
        batch.n_tokens = len(entries)
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    # Warm up (page in the weights) before timing, as the servers get a warm-up request.
    decode([(tokenize("Hello")[0], 0, 0, True)])
    records = []
    decode_time = 0.0
    decode_tokens = 0
    started = time.perf_counter()
    for r in range(rounds):
        llama_cpp.llama_memory_clear(mem, True)
        prompts = [tokenize(prompt_for(c, r)) for c in range(n)]
        t0 = time.perf_counter()
        # Prefill every prompt, in chunks of at most N_BATCH tokens; the last token of
        # each prompt gives that sequence's first output row.
        entries = [
            (tok, pos, seq, pos == len(p) - 1)
            for seq, p in enumerate(prompts)
            for pos, tok in enumerate(p)
        ]
        last: list[int] = [0] * n
        for lo in range(0, len(entries), N_BATCH):
            chunk = entries[lo : lo + N_BATCH]
            decode(chunk)
            for i, (_, _, seq, wants) in enumerate(chunk):
                if wants:
                    last[seq] = llama_cpp.llama_sampler_sample(greedy, ctx, i)
        stamps = [[time.perf_counter() - t0] for _ in range(n)]
        pos = [len(p) for p in prompts]
        d0 = time.perf_counter()
        for _ in range(MAX_TOKENS - 1):
            decode([(last[s], pos[s], s, True) for s in range(n)])
            now = time.perf_counter() - t0
            for s in range(n):
                last[s] = llama_cpp.llama_sampler_sample(greedy, ctx, s)
                pos[s] += 1
                stamps[s].append(now)
        decode_time += time.perf_counter() - d0
        decode_tokens += n * (MAX_TOKENS - 1)
        records += [
            {
                "start": t0 - started,
                "stamps": s,
                "tokens": len(s),
                "finish_reason": "length",
                "done": True,
            }
            for s in stamps
        ]
    wall = time.perf_counter() - started
    llama_cpp.llama_sampler_free(greedy)
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(mptr)
    return {"wall": wall, "records": records, "decode_tps": decode_tokens / decode_time}


def main(argv: list[str]) -> None:
    mode, model, *rest = argv
    nums = [int(x) for x in rest]
    result = single(model, *nums) if mode == "single" else multiseq(model, *nums)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
