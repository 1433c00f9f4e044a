"""What a report shows, computed from a results directory alone (so ``--from DIR`` and a
fresh run give the same report).

* ``load_results_dir``: results.json, trajectory.json and the .npy arrays.
* ``score_matrix``: M = E W E^T (row = key token, column = query token; THEORY.md notation).
* ``model_attention``: the trained model's next-token distribution on one window,
  p_W(a | X) = sum_{t: tau_t = a} softmax(s)_t with s_t = x_t^T W x_last (THEORY.md §1.3-§1.4).
* ``report_windows`` / ``compare_windows``: a few new windows, the automaton's prediction
  (hard retrieval + soft composition, §5.5) next to the trained model's attention.
* ``most_cyclic_queries`` / ``heatmap_tokens``: which queries and tokens to draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from theorycheck.automaton import Automaton, check_automaton_layout
from theorycheck.errors import InputError
from theorycheck.io import is_dir, read_json, read_npy

HEATMAP_FULL_VOCAB = 40  # draw every token up to this vocabulary size
HEATMAP_TOKENS = 30  # otherwise this many tokens
WINDOW_KINDS = {"composition": 3, "retrieval": 2, "undetermined": 1}  # windows shown per kind


@dataclass(frozen=True, eq=False)
class ReportData:
    """The contents of a results directory (analyze, optionally verify)."""

    results_dir: Path
    results: dict
    E: np.ndarray
    W_svm: np.ndarray
    W_fin: np.ndarray
    W_trained: np.ndarray | None  # None for an analyze-only directory
    trajectory: dict | None
    timings: dict | None
    scansnap: dict | None

    @property
    def vocab(self) -> tuple[str, ...]:
        return tuple(self.results["vocabulary"])

    @property
    def verify(self) -> dict | None:
        return self.results.get("verify")

    @property
    def seed(self) -> int:
        return int((self.verify or {}).get("config", {}).get("seed", 0))

    @property
    def checkpoints(self) -> list[dict]:
        return list(self.trajectory["checkpoints"]) if self.trajectory else []

    @property
    def exit_code(self) -> int:
        """The verify verdict's exit code; for analyze-only results analyze's (3 if an
        assumption fails, else 0)."""
        if self.verify is not None:
            return int(self.verify["exit_code"])
        return 0 if all(a["holds"] for a in self.results["assumptions"]) else 3

    def automaton(self) -> Automaton:
        return Automaton(self.vocab, self.E, self.W_fin, self.results["queries"])


def load_results_dir(path: str | Path) -> ReportData:
    """Read a directory written by ``analyze``, ``verify`` or ``report``."""
    path = Path(path)
    if not is_dir(path):
        raise InputError(f"--from {str(path)!r} is not a directory; give a results directory written by "
                         "`theorycheck verify ... --out DIR`")
    hint = "re-run `theorycheck verify ... --out DIR`"
    results = read_json(path / "results.json", hint)
    for key in ("vocabulary", "queries", "assumptions", "corpus", "graphs"):
        if key not in results:
            raise InputError(f"{str(path / 'results.json')!r} has no {key!r} entry; {hint}")
    check_automaton_layout(results, repr(str(path / "results.json")), hint)
    for key in ("corpus", "graphs"):
        if not isinstance(results[key], dict):
            raise InputError(f"{str(path / 'results.json')!r}: {key!r} is not an object; {hint}")
    if not isinstance(results["assumptions"], list) or not all(
            isinstance(a, dict) and {"name", "holds"} <= set(a) for a in results["assumptions"]):
        raise InputError(f"{str(path / 'results.json')!r}: 'assumptions' is not a list of checks; {hint}")
    if "verify" in results and not isinstance(results["verify"], dict):
        raise InputError(f"{str(path / 'results.json')!r}: 'verify' is not an object; {hint}")
    trained = "verify" in results
    optional = {name: (path / name) for name in ("timings.json", "scansnap.json")}
    return ReportData(
        results_dir=path,
        results=results,
        E=read_npy(path / "E.npy"),
        W_svm=read_npy(path / "W_svm.npy"),
        W_fin=read_npy(path / "W_fin.npy"),
        W_trained=read_npy(path / "W_trained.npy") if trained else None,
        trajectory=read_json(path / "trajectory.json") if trained else None,
        timings=read_json(optional["timings.json"]) if optional["timings.json"].exists() else None,
        scansnap=read_json(optional["scansnap.json"]) if optional["scansnap.json"].exists() else None,
    )


# --------------------------------------------------------------------------- scores, attention
def score_matrix(E: np.ndarray, W: np.ndarray, tokens: np.ndarray | None = None) -> np.ndarray:
    """M = E W E^T restricted to ``tokens``: M[a, k] = e_a^T W e_k, the score of key token a
    when the query (last token) is k (THEORY.md notation, row = key, column = query)."""
    rows = E if tokens is None else E[np.asarray(tokens)]
    return rows @ W @ rows.T


def model_attention(E: np.ndarray, W: np.ndarray, token_ids: list[int]) -> dict[int, float]:
    """p_W(a | X) = sum_{t: tau_t = a} softmax(s)_t, s_t = x_t^T W x_last, over every position
    of the window, the last one included (THEORY.md §1.3-§1.4, Li et al. 2024)."""
    ids = np.asarray(token_ids, dtype=np.int64)
    scores = E[ids] @ (W @ E[ids[-1]])
    weights = np.exp(scores - scores.max())
    weights /= weights.sum()
    out: dict[int, float] = {}
    for t, w in zip(ids.tolist(), weights.tolist(), strict=True):
        out[t] = out.get(t, 0.0) + w
    return out


# --------------------------------------------------------------------------- selections
def query_tokens(query: dict) -> list[int]:
    """Tokens seen with this query (the nodes of G^(k))."""
    return sorted(t for scc in query["scc_indices"] for t in scc)


def cyclic_structure(query: dict) -> tuple[int, int, int]:
    """(cyclic SCCs, priority levels, tokens in cyclic SCCs) of G^(k): the sort key for 'most
    cyclic structure' (most cyclic SCCs first, then the deepest priority order)."""
    cyclic = [s for s in query["scc_indices"] if len(s) >= 2]
    return len(cyclic), max(query["levels"], default=-1) + 1, sum(len(s) for s in cyclic)


def most_cyclic_queries(queries: list[dict], count: int = 3) -> list[dict]:
    """The ``count`` queries that rank highest by ``cyclic_structure`` (ties: vocabulary order)."""
    ranked = sorted(queries, key=lambda q: (*(-v for v in cyclic_structure(q)), q["query_index"]))
    return ranked[:count]


def heatmap_tokens(results: dict) -> tuple[np.ndarray, str]:
    """Token ids for the score heatmaps and a note saying how they were chosen.

    Every token when K <= HEATMAP_FULL_VOCAB; otherwise the HEATMAP_TOKENS tokens that occur
    in the most token-priority graphs (a results directory keeps no token counts; for text
    input the vocabulary is ranked by frequency, which breaks ties)."""
    K = len(results["vocabulary"])
    if K <= HEATMAP_FULL_VOCAB:
        return np.arange(K), f"all {K} tokens"
    graphs_with = np.zeros(K, dtype=np.int64)
    for q in results["queries"]:
        graphs_with[query_tokens(q)] += 1
    order = np.lexsort((np.arange(K), -graphs_with))[:HEATMAP_TOKENS]
    return np.sort(order), (f"{HEATMAP_TOKENS} of {K} tokens: those that occur in the most token-priority "
                            "graphs (ties broken by vocabulary order)")


def seen_pairs(results: dict, tokens: np.ndarray) -> np.ndarray:
    """mask[i, j]: token tokens[i] occurs in some window whose query is tokens[j] (a node of
    G^(tokens[j])); the other scores are unconstrained by the data."""
    position = {int(t): j for j, t in enumerate(tokens)}
    mask = np.zeros((len(tokens), len(tokens)), dtype=bool)
    for q in results["queries"]:
        j = position.get(int(q["query_index"]))
        if j is not None:
            rows = [position[t] for t in query_tokens(q) if t in position]
            mask[rows, j] = True
    return mask


# --------------------------------------------------------------------------- windows
@dataclass(frozen=True)
class WindowComparison:
    """One window: the automaton's prediction next to the trained model's attention."""

    window: tuple[str, ...]  # tokens, the last one the query
    kind: str  # composition | retrieval | undetermined
    status: str  # automaton status
    retrieved: tuple[str, ...]
    automaton: dict[str, float]  # soft composition over the retrieved tokens
    model: dict[str, float] | None  # trained model's attention per token (None: no training)
    leak: float | None  # model's mass outside the retrieved tokens
    tv: float | None  # total-variation distance model vs automaton

    def as_dict(self) -> dict:
        return {"window": " ".join(self.window), "kind": self.kind, "status": self.status,
                "retrieved": list(self.retrieved), "automaton": self.automaton, "model": self.model,
                "leak": self.leak, "tv": self.tv}


def _draw_window(rng: np.random.Generator, query: dict, from_cycle: bool, max_tokens: int) -> list[int]:
    k = int(query["query_index"])
    pool = query_tokens(query)
    ids: list[int] = []
    cyclic = [s for s in query["scc_indices"] if len(s) >= 2]
    if from_cycle and cyclic:  # two members of one cyclic SCC: soft composition shows
        scc = cyclic[int(rng.integers(len(cyclic)))]
        ids += [int(t) for t in rng.choice(scc, size=2, replace=False)]
    extra = int(rng.integers(0 if ids else 1, max_tokens - len(ids) + 1))
    ids += [int(t) for t in rng.choice(pool, size=extra, replace=True)]
    return ids + [k]


def report_windows(results: dict, automaton: Automaton, seed: int, max_tokens: int = 4,
                   attempts: int = 600) -> list[tuple[list[int], str]]:
    """A few new windows (<= max_tokens tokens seen with a query, then the query), drawn
    with Generator([seed, 6]): up to WINDOW_KINDS[kind] windows whose automaton prediction is
    a soft composition of >= 2 tokens, a single retrieved token, or undetermined (no
    dominant SCC).  Deterministic given results.json and the seed."""
    queries = results["queries"]
    if not queries:
        return []
    rng = np.random.default_rng([seed, 6])
    found: dict[str, list[list[int]]] = {kind: [] for kind in WINDOW_KINDS}
    seen: set[tuple] = set()
    for attempt in range(attempts):
        query = queries[int(rng.integers(len(queries)))]
        ids = _draw_window(rng, query, from_cycle=attempt % 2 == 0, max_tokens=max_tokens)
        key = (tuple(sorted(ids[:-1])), ids[-1])
        if key in seen:
            continue
        seen.add(key)
        r = automaton.predict_ids(ids)
        kind = "undetermined" if r.status != "determined" else ("composition" if len(r.retrieved) >= 2 else "retrieval")
        if len(found[kind]) < WINDOW_KINDS[kind]:
            found[kind].append(ids)
        if all(len(found[k]) == n for k, n in WINDOW_KINDS.items()):
            break
    return [(ids, kind) for kind in WINDOW_KINDS for ids in found[kind]]


def compare_windows(data: ReportData) -> list[WindowComparison]:
    """The automaton's prediction and the trained model's attention on ``report_windows``."""
    automaton = data.automaton()
    vocab = data.vocab
    out = []
    for ids, kind in report_windows(data.results, automaton, data.seed):
        r = automaton.predict_ids(ids)
        model = leak = tv = None
        if data.W_trained is not None:
            p = {vocab[t]: v for t, v in model_attention(data.E, data.W_trained, ids).items()}
            model = dict(sorted(p.items(), key=lambda kv: -kv[1]))
            if r.status == "determined":
                leak = float(sum(v for t, v in p.items() if t not in r.distribution))
                tv = 0.5 * float(sum(abs(p.get(t, 0.0) - r.distribution.get(t, 0.0)) for t in set(p) | set(r.distribution)))
        out.append(WindowComparison(tuple(vocab[t] for t in ids), kind, r.status, r.retrieved,
                                    dict(sorted(r.distribution.items(), key=lambda kv: -kv[1])), model, leak, tv))
    return out
