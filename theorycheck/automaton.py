"""The automaton of THEORY.md §5.5: hard retrieval, then soft composition.

For a window X with last token k whose dominant SCC C* exists (an SCC of G^(k) among
the window's tokens that reaches every token of the window, §2.3):

    p(a | X) = 1[a in C*] c_a exp(e_a^T W^fin e_k) / sum_{b in C*} c_b exp(e_b^T W^fin e_k),

c_a being the count of a in the window.  Without a dominant SCC the graph does not fix
the retrieved set and the automaton says so instead of guessing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import networkx as nx
import numpy as np

from theorycheck.errors import InputError


@dataclass(frozen=True)
class Retrieval:
    query: str
    status: str  # "determined", "no dominant SCC", "unseen query"
    retrieved: tuple[str, ...]  # tokens of the dominant SCC present in the window
    distribution: dict[str, float]  # soft composition over retrieved tokens

    def as_dict(self) -> dict:
        return {"query": self.query, "status": self.status, "retrieved": list(self.retrieved),
                "distribution": self.distribution}


class Automaton:
    """Built from per-query SCCs in priority order plus condensation edges (results.json layout)."""

    def __init__(self, vocab: tuple[str, ...], E: np.ndarray, W_fin: np.ndarray, queries: list[dict]):
        self.vocab = vocab
        self.index = {t: i for i, t in enumerate(vocab)}
        self.E = E
        self.W_fin = W_fin
        self.queries = {q["query_index"]: q for q in queries}
        self._reach: dict[int, tuple[dict[int, int], dict[int, set[int]]]] = {}

    def _reachability(self, k: int):
        if k not in self._reach:
            info = self.queries[k]
            scc_of = {t: j for j, members in enumerate(info["scc_indices"]) for t in members}
            dag = nx.DiGraph()
            dag.add_nodes_from(range(len(info["scc_indices"])))
            dag.add_edges_from(map(tuple, info["condensation_edges"]))
            reach = {j: nx.descendants(dag, j) | {j} for j in dag.nodes}
            self._reach[k] = (scc_of, reach)
        return self._reach[k]

    def dominant_scc(self, token_ids: list[int]) -> int | None:
        """Index (into the query's SCC list) of the dominant SCC of the window, or None."""
        k = token_ids[-1]
        if k not in self.queries:
            return None
        scc_of, reach = self._reachability(k)
        if any(t not in scc_of for t in token_ids):
            return None  # a token never seen with this query is an isolated node of G^(k)
        present = {scc_of[t] for t in token_ids}
        winners = [j for j in present if present <= reach[j]]
        return winners[0] if winners else None

    def predict_ids(self, token_ids: list[int]) -> Retrieval:
        k = token_ids[-1]
        query = self.vocab[k]
        if k not in self.queries:
            return Retrieval(query, "unseen query", (), {})
        j = self.dominant_scc(token_ids)
        if j is None:
            return Retrieval(query, "no dominant SCC", (), {})
        members = set(self.queries[k]["scc_indices"][j])
        counts = Counter(t for t in token_ids if t in members)
        toks = sorted(counts)
        logits = np.array([np.log(counts[t]) + self.E[t] @ self.W_fin @ self.E[k] for t in toks])
        p = np.exp(logits - logits.max())
        p /= p.sum()
        return Retrieval(query, "determined", tuple(self.vocab[t] for t in toks),
                         {self.vocab[t]: float(v) for t, v in zip(toks, p)})

    def predict(self, tokens: list[str]) -> Retrieval:
        if len(tokens) < 1:
            raise InputError("the window is empty; give at least the query token")
        missing = [t for t in tokens if t not in self.index]
        if missing:
            raise InputError(f"token(s) {missing[:5]} are not in the vocabulary; use tokens from results.json")
        return self.predict_ids([self.index[t] for t in tokens])


# --------------------------------------------------------------------------- results.json layout
def _int_list(value, K: int) -> bool:
    return isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < K
                                           for i in value)


def check_queries(queries, K: int, where: str, hint: str) -> None:
    """The per-query SCC layout of results.json: what the automaton reads, checked up front."""
    if not isinstance(queries, list):
        raise InputError(f"{where}: 'queries' must be a list; {hint}")
    for n, q in enumerate(queries):
        if not isinstance(q, dict):
            raise InputError(f"{where}: queries[{n}] is not an object; {hint}")
        k = q.get("query_index")
        sccs = q.get("scc_indices")
        edges = q.get("condensation_edges")
        if not _int_list([k], K):
            raise InputError(f"{where}: queries[{n}] has no valid 'query_index' (0..{K - 1}); {hint}")
        if not isinstance(sccs, list) or not all(_int_list(c, K) for c in sccs):
            raise InputError(f"{where}: queries[{n}]['scc_indices'] must be lists of token indices; {hint}")
        if not isinstance(edges, list) or not all(
                _int_list(e, len(sccs)) and len(e) == 2 for e in edges):
            raise InputError(f"{where}: queries[{n}]['condensation_edges'] must be pairs of SCC indices; {hint}")


def check_automaton_layout(results: dict, where: str, hint: str) -> None:
    """Raise InputError unless ``results`` has the vocabulary and per-query SCC layout of results.json."""
    vocab = results.get("vocabulary")
    if not isinstance(vocab, list) or not vocab or not all(isinstance(t, str) for t in vocab):
        raise InputError(f"{where} has no 'vocabulary' list of tokens; {hint}")
    if len(set(vocab)) != len(vocab):
        raise InputError(f"{where}: the vocabulary repeats a token; {hint}")
    if "queries" not in results:
        raise InputError(f"{where} has no 'queries' entry; {hint}")
    check_queries(results["queries"], len(vocab), where, hint)
