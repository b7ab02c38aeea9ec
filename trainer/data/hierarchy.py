"""KACL's disease hierarchy and its "hard similar" negatives (Han et al., Sec. 3.1 and Sec. 3.3).

The hierarchy (`resources/disease_hierarchy.yaml`, loaded once): body parts -> findings, plus the
normal class ("No Finding"). KACL treats as negatives of an anchor "only normal chest X-rays or
images within the same body part but with a different disease", from the indicator 1[k = b, l != d]
of its loss; `HierarchyIndex` gives them, from other patients (as SCALP's sampler does: an image of
the same patient is never a negative).

Multi-label reading (NIH images carry several findings; the paper writes one disease per image):
- an image is normal when the label space has a "No Finding" column and it is 1, else when every
  entry is known and 0. With a label space narrower than the source's findings (default8) an image
  whose findings all lie outside it therefore counts as normal: open the source with nih14 for the
  paper's rule;
- a query's body parts are those of its positive findings; a candidate y is a "hard similar"
  negative of x when y shares a body part with x and shares no finding with x, and none of x's
  findings is unknown (NaN) in y (it might be shared);
- a normal query has no hierarchy negatives: KACL's contrastive loss runs over "all
  disease-positive images" only (`negative_keys` returns none, reason "normal query").

When a query has no hierarchy negative among other patients, `negative_keys` falls back to other
patients sharing no finding with it ("no shared finding"), then to any other patient ("any
patient"); the reason is returned with the draw so a run can count fallbacks.

Everything is grouped by "diagnosis" (the pattern of positive and unknown entries): the rule is
decided once per pair of diagnoses, vectorised, so the full NIH table indexes in well under a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from cxrviewer.errors import CxrError
from cxrviewer.trainer.data.sampling import NegativeDraw, _group_of, _groups
from cxrviewer.trainer.data.sources import Record


class HierarchyError(CxrError, ValueError):
    """A disease hierarchy file or a label space the hierarchy cannot serve."""


@dataclass(frozen=True)
class DiseaseHierarchy:
    """Body parts -> findings, the normal class and the aliases of other vocabularies."""

    normal: str
    parts: dict[str, tuple[str, ...]]
    aliases: dict[str, str]

    def canonical(self, name: str) -> str:
        return self.aliases.get(name, name)

    def is_normal(self, name: str) -> bool:
        return self.canonical(name) == self.normal

    def part_of(self, name: str) -> str:
        """The body part of a finding (aliases allowed); HierarchyError for a name it does not know."""
        finding = self.canonical(name)
        for part, findings in self.parts.items():
            if finding in findings:
                return part
        raise HierarchyError(None, f"the disease hierarchy does not place the finding '{name}' in a body part")

    @property
    def findings(self) -> tuple[str, ...]:
        return tuple(f for findings in self.parts.values() for f in findings)


def _parse(data: object, path: Path) -> DiseaseHierarchy:
    if not isinstance(data, dict) or not isinstance(data.get("body_parts"), dict) or not data.get("normal"):
        raise HierarchyError(path, "the disease hierarchy needs 'normal' and a 'body_parts' mapping")
    parts: dict[str, tuple[str, ...]] = {}
    seen: set[str] = set()
    for part, findings in data["body_parts"].items():
        if not isinstance(findings, list) or not findings:
            raise HierarchyError(path, f"the body part '{part}' lists no findings")
        names = tuple(str(f) for f in findings)
        twice = seen.intersection(names) | {n for n in names if names.count(n) > 1}
        if twice:
            raise HierarchyError(path, f"the finding(s) {', '.join(sorted(twice))} appear under more than one "
                                       "body part")
        seen.update(names)
        parts[str(part)] = names
    normal = str(data["normal"])
    aliases = {str(k): str(v) for k, v in (data.get("aliases") or {}).items()}
    stray = sorted(k for k, v in aliases.items() if v not in seen and v != normal)
    if stray:
        raise HierarchyError(path, f"the alias(es) {', '.join(stray)} point to no finding of the hierarchy")
    return DiseaseHierarchy(normal, parts, aliases)


@lru_cache(maxsize=4)
def load_hierarchy(path: str | Path | None = None) -> DiseaseHierarchy:
    """The hierarchy in `path` (default: the shipped `resources/disease_hierarchy.yaml`), read once."""
    import yaml

    from cxrviewer.resources import path as resource

    file = Path(path) if path is not None else resource("disease_hierarchy.yaml")
    if not file.is_file():
        raise HierarchyError(file, "the disease hierarchy file does not exist")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise HierarchyError(file, f"the disease hierarchy is not readable YAML ({exc})") from exc
    return _parse(data, file)


class HierarchyIndex:
    """Patients and diagnoses of a list of records, for KACL's hierarchy negatives."""

    def __init__(self, records: Sequence[Record], label_names: Sequence[str], labels: np.ndarray | None = None,
                 hierarchy: DiseaseHierarchy | None = None) -> None:
        self.hierarchy = hierarchy or load_hierarchy()
        names = tuple(label_names)
        if labels is None:
            labels = np.stack([r.labels for r in records]) if records else np.zeros((0, len(names)), np.float32)
        labels = np.asarray(labels, dtype=np.float32)
        if labels.shape != (len(records), len(names)):
            raise HierarchyError(None, f"the labels must be one row of {len(names)} per record, "
                                       f"got shape {labels.shape}")
        normal_col = [j for j, n in enumerate(names) if self.hierarchy.is_normal(n)]
        finding_cols = [j for j, n in enumerate(names) if not self.hierarchy.is_normal(n)]
        part_names = list(self.hierarchy.parts)
        part_of = np.zeros((len(finding_cols), len(part_names)), dtype=np.uint8)
        for row, j in enumerate(finding_cols):
            part_of[row, part_names.index(self.hierarchy.part_of(names[j]))] = 1
        values = labels[:, finding_cols]
        self.positive = np.nan_to_num(values, nan=0.0) > 0.5
        unknown = np.isnan(values)
        if normal_col:
            self.normal = np.nan_to_num(labels[:, normal_col[0]], nan=0.0) > 0.5
        else:
            self.normal = ~self.positive.any(axis=1) & ~unknown.any(axis=1)
        self.n = len(records)
        self.part_names = tuple(part_names)
        self.parts = (self.positive.astype(np.uint8) @ part_of) > 0  # [N, parts]
        _, self.patient = np.unique(np.array([r.patient_id for r in records]), return_inverse=True)
        self.patient = self.patient.reshape(-1)
        # One code per diagnosis: positive bits, unknown bits and the normal flag.
        key = np.concatenate([self.positive, unknown, self.normal[:, None]], axis=1)
        first, self.diagnosis = np.unique(np.packbits(key, axis=1), axis=0, return_index=True,
                                          return_inverse=True)[1:]
        self.diagnosis = self.diagnosis.reshape(-1)
        self._d_pos = self.positive[first].astype(np.uint8)
        self._d_unknown = unknown[first].astype(np.uint8)
        self._d_parts = self.parts[first].astype(np.uint8)
        self._d_normal = self.normal[first]
        self._order, self._starts = _groups(self.diagnosis)
        self._p_order, self._p_starts = _groups(self.patient)
        self._p_group = _group_of(self._p_order, self._p_starts)
        self._rows: dict[int, np.ndarray] = {}

    @property
    def n_diagnoses(self) -> int:
        return len(self._d_normal)

    def _allowed(self, d: int) -> np.ndarray:
        """bool [D]: the diagnoses that are hierarchy negatives of diagnosis d (cached per d)."""
        row = self._rows.get(d)
        if row is None:
            if self._d_normal[d]:
                row = np.zeros(self.n_diagnoses, dtype=bool)
            else:
                shares_part = (self._d_parts @ self._d_parts[d]) > 0
                shares_finding = (self._d_pos @ self._d_pos[d]) > 0
                maybe_shared = (self._d_unknown @ self._d_pos[d]) > 0
                row = self._d_normal | (shares_part & ~shares_finding & ~maybe_shared & ~self._d_normal)
            self._rows[d] = row
        return row

    def is_negative(self, queries: Sequence[int] | np.ndarray, candidates: Sequence[int] | np.ndarray) -> np.ndarray:
        """bool [Q, C]: candidate c is a hierarchy negative of query q (other patient, normal or hard similar),
        e.g. the mask of in-batch negatives for KACL's loss with queries = candidates = the batch."""
        q = np.asarray(queries, dtype=np.int64).reshape(-1)
        c = np.asarray(candidates, dtype=np.int64).reshape(-1)
        for a in (q, c):
            if a.size and (a.min() < 0 or a.max() >= self.n):
                raise HierarchyError(None, f"record indices must lie in 0..{self.n - 1}")
        diagnoses, inverse = np.unique(self.diagnosis[q], return_inverse=True)
        rows = np.stack([self._allowed(int(d)) for d in diagnoses]) if len(q) else np.zeros((0, self.n_diagnoses), bool)
        allowed = rows[inverse.reshape(-1)][:, self.diagnosis[c]]
        return allowed & (self.patient[q][:, None] != self.patient[c][None, :])

    def pool(self, i: int) -> np.ndarray:
        """All hierarchy negatives of record i among other patients (sorted record indices)."""
        if not 0 <= int(i) < self.n:
            raise HierarchyError(None, f"record index {i} is outside 0..{self.n - 1}")
        groups = np.flatnonzero(self._allowed(int(self.diagnosis[i])))
        if groups.size == 0:
            return np.empty(0, dtype=np.int64)
        members = np.concatenate([self._order[self._starts[g]:self._starts[g + 1]] for g in groups])
        return np.sort(members[self.patient[members] != self.patient[i]])

    def _draw(self, i: int, k: int, rng: np.random.Generator) -> np.ndarray:
        """k picks from `pool(i)` (without replacement when it holds k), never materialising the pool:
        positions are drawn over the allowed diagnosis groups laid end to end."""
        groups = np.flatnonzero(self._allowed(int(self.diagnosis[i])))
        sizes = self._starts[groups + 1] - self._starts[groups]
        ends = np.cumsum(sizes)
        total = int(ends[-1]) if len(ends) else 0
        g = self._p_group[i]
        own = self._p_order[self._p_starts[g]:self._p_starts[g + 1]]
        n_own = int(np.count_nonzero(self._allowed(int(self.diagnosis[i]))[self.diagnosis[own]]))
        if total - n_own <= 0:
            return np.empty(0, dtype=np.int64)
        replace = total - n_own < k
        count = 2 * k if replace else min(total, k + n_own)  # same-patient picks are dropped below
        picks = np.empty(0, dtype=np.int64)
        while len(picks) < k:
            pos = rng.choice(total, size=count, replace=replace)
            at = np.searchsorted(ends, pos, side="right")
            found = self._order[self._starts[groups[at]] + pos - (ends[at] - sizes[at])]
            picks = np.concatenate([picks, found[self.patient[found] != self.patient[i]]])
        return picks[:k]

    def negative_keys(self, i: int, k: int, rng: np.random.Generator) -> NegativeDraw:
        """`k` hierarchy negatives of record i (with replacement if few), or the counted fallbacks."""
        if not 0 <= int(i) < self.n:
            raise HierarchyError(None, f"record index {i} is outside 0..{self.n - 1}")
        if k < 1:
            raise HierarchyError(None, "at least one negative key must be asked for")
        if self.normal[i]:  # KACL's contrastive loss runs over disease-positive anchors only
            return NegativeDraw(np.empty(0, dtype=np.int64), "normal query")
        picks = self._draw(int(i), k, rng)
        if picks.size:
            return NegativeDraw(picks, "")
        others = self.patient != self.patient[i]
        pool = np.flatnonzero(others & ~(self.positive & self.positive[i]).any(axis=1))
        fallback = "no shared finding"
        if pool.size == 0:
            pool, fallback = np.flatnonzero(others), "any patient"
        if pool.size == 0:
            return NegativeDraw(np.empty(0, dtype=np.int64), "no other patient")
        picks = rng.choice(pool, size=k, replace=pool.size < k)
        return NegativeDraw(np.asarray(picks, dtype=np.int64), fallback)
