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
        from theorycheck.errors import InputError

        if len(tokens) < 1:
            raise InputError("the window is empty; give at least the query token")
        missing = [t for t in tokens if t not in self.index]
        if missing:
            raise InputError(f"token(s) {missing[:5]} are not in the vocabulary; use tokens from results.json")
        return self.predict_ids([self.index[t] for t in tokens])
