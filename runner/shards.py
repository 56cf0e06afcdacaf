"""Many machines, one organisers' folder: shard K of N takes the cases whose position in the sorted list of
case ids is K modulo N (K counts from 0). The N shards together take every case exactly once, whatever the
machines; each writes its own fields and `timings.K-of-N.json` (interfaces/conventions.py), so all shards may
share one output folder.

Where K/N comes from, first found wins (runner/settings.py reads it once, before any work):
  `process.py --shard K/N`
  $REMIND2REG_SHARD=K/N
  SLURM job arrays: $SLURM_ARRAY_TASK_ID, $SLURM_ARRAY_TASK_COUNT (and $SLURM_ARRAY_TASK_MIN, _STEP):
      K = (ID - MIN) / STEP, N = COUNT, e.g. `sbatch --array=0-7` or `--array=1-8`
  Kubernetes Indexed Jobs: $JOB_COMPLETION_INDEX with N from $REMIND2REG_SHARDS (set it to `completions`)
N = 1 (e.g. `--shard 0/1`) means no sharding, and turns off the environment's values.
"""
from __future__ import annotations

SHARD_ENV = "REMIND2REG_SHARD"
SHARDS_ENV = "REMIND2REG_SHARDS"
K8S_INDEX_ENV = "JOB_COMPLETION_INDEX"
SLURM_ID, SLURM_COUNT, SLURM_MIN, SLURM_STEP = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT",
                                               "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP")


class ShardError(ValueError):
    """A shard setting that cannot be used; one line naming where it came from."""


def _int(value: str, source: str) -> int:
    text = str(value).strip()
    # ASCII digits only: int() also takes other scripts' digits ("１/４"), which no scheduler writes
    if not (text.isascii() and text.lstrip("-+").isdigit()):
        raise ShardError(f"{source}: {value!r} is not a whole number")
    return int(text)


def check(k: int, n: int, source: str) -> tuple[int, int] | None:
    """(K, N) when 0 <= K < N and N > 1, None for N = 1 (no sharding)."""
    if n < 1 or not 0 <= k < n:
        raise ShardError(f"{source}: shard {k} of {n}: expected 0 <= K < N (K counts from 0)")
    return None if n == 1 else (k, n)


def parse(text: str, source: str = "--shard") -> tuple[int, int] | None:
    """`K/N` -> (K, N), None for N = 1."""
    k, slash, n = str(text).strip().partition("/")
    if not slash:
        raise ShardError(f"{source}={text!r}: expected K/N, e.g. 0/4 (shard K, from 0, of N)")
    source = f"{source}={text!r}"
    return check(_int(k, source), _int(n, source), source)


def from_environment(environ, override: str | None = None) -> tuple[tuple[int, int] | None, str]:
    """(shard or None, where it came from) by the precedence in this module's docstring."""
    if override is not None:
        return parse(override, "--shard"), "--shard"
    if environ.get(SHARD_ENV):
        return parse(environ[SHARD_ENV], f"${SHARD_ENV}"), f"${SHARD_ENV}"
    if environ.get(SLURM_ID):
        if not environ.get(SLURM_COUNT):
            raise ShardError(f"${SLURM_ID} is set but ${SLURM_COUNT} is not: give --shard K/N")
        task = _int(environ[SLURM_ID], f"${SLURM_ID}")
        low = _int(environ.get(SLURM_MIN) or "0", f"${SLURM_MIN}")
        step = _int(environ.get(SLURM_STEP) or "1", f"${SLURM_STEP}")
        if step < 1 or (task - low) % step:
            raise ShardError(f"${SLURM_ID}={task} is not on the array's range (min {low}, step {step}): "
                             "use --array=A-B or give --shard K/N")
        source = f"${SLURM_ID}={task} of ${SLURM_COUNT}={environ[SLURM_COUNT]}"
        return check((task - low) // step, _int(environ[SLURM_COUNT], f"${SLURM_COUNT}"), source), source
    if environ.get(K8S_INDEX_ENV):
        if not environ.get(SHARDS_ENV):
            raise ShardError(f"${K8S_INDEX_ENV} is set but ${SHARDS_ENV} is not: set it to the Job's "
                             f"completions (or {SHARDS_ENV}=1 for no sharding)")
        source = f"${K8S_INDEX_ENV}={environ[K8S_INDEX_ENV]} of ${SHARDS_ENV}={environ[SHARDS_ENV]}"
        return check(_int(environ[K8S_INDEX_ENV], f"${K8S_INDEX_ENV}"),
                     _int(environ[SHARDS_ENV], f"${SHARDS_ENV}"), source), source
    if environ.get(SHARDS_ENV) and environ[SHARDS_ENV].strip() != "1":
        raise ShardError(f"${SHARDS_ENV}={environ[SHARDS_ENV]!r} without a shard index "
                         f"(${K8S_INDEX_ENV}, ${SLURM_ID}) : give --shard K/N")
    return None, "none"


def select(case_ids, shard: tuple[int, int] | None) -> list[str]:
    """This shard's case ids: position in the sorted list modulo N == K (all of them when shard is None)."""
    ordered = sorted(case_ids)
    if shard is None:
        return ordered
    k, n = shard
    return [case for position, case in enumerate(ordered) if position % n == k]
