"""MedAug's pair selection from patient metadata (Vu et al., Sec. 2.2, 3.1, 3.3 and Appendix B).

Positive pairs (Eq. 2): the key of a query image x is an augmented view of an image x' drawn
uniformly from S_c(x), the images satisfying criterion c relative to x; when S_c(x) is empty, of x
itself (two augmented views of one image, MoCo's instance discrimination). Criterion c is always
"same patient", plus
- `studies`: "same" (x' from x's study), "distinct" (from another study of the patient) or "all";
- `laterality`: "same", "distinct" or "all".
The paper's best is same patient, same study, all lateralities (Table 1).

Negative pairs (Sec. 3.3, Appendix B), as masks over a MoCo queue whose entries carry the record
index of the image each key came from (-1 for an empty slot), by the paper's names:
- "default": every key that is not a view of the query image (the paper's best, Table 6);
- "same_laterality": only keys of the query's laterality, S(x) (Eq. 5);
- "reweighted", "appended", "synthetic": every default key enters the loss, and S(x) marks the hard
  ones the loss reweights (Eq. 6), appends again (Eq. 7) or mixes into synthetic keys. The masks say
  which entries; the weights and the extra keys are the loss's business (trainer/methods/medaug.py).

Laterality, as the paper uses the word, is frontal (AP/PA) versus lateral, so it is read from the
record's `view` (PA, AP, FRONTAL -> frontal; LL, RL, LAT, LATERAL -> lateral; anything else, ""
included, unknown), not from `Record.laterality` (a DICOM body side, L/R, which is a different
thing). NIH's table has only PA and AP views: every NIH image is frontal, so on NIH "same" equals
"all" and "distinct" leaves every image without a positive.

Deviations and choices where the paper is silent:
- S_c(x) excludes x itself ("different images"), so "fallback to x" happens exactly when no other
  image qualifies (Sec. 3.2.2 speaks of skipping x with an empty S_c(x)).
- Only training images are drawn as positives (`train`, default all records).
- Unknown laterality satisfies no laterality criterion: under "same" or "distinct" a query of
  unknown laterality has no positive (falls back to itself) and an image of unknown laterality is
  nobody's positive. Among negatives, S(x) of a query of unknown laterality is empty; under
  "same_laterality" such a query keeps the default negatives instead of none (flagged `fallback`).
- The paper's size-controlled ablations (Tables 3-5: random subset pre-selection, skipping queries
  without a distinct-image positive) are not built in; `positive_counts` gives what a trainer
  needs to skip such queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cxrviewer.errors import CxrError
from cxrviewer.trainer.data.sampling import _groups
from cxrviewer.trainer.data.sources import Record

STUDIES: tuple[str, ...] = ("same", "distinct", "all")
LATERALITIES: tuple[str, ...] = ("same", "distinct", "all")
NEGATIVE_STRATEGIES: tuple[str, ...] = ("default", "same_laterality", "reweighted", "appended", "synthetic")
FRONTAL, LATERAL, UNKNOWN = 0, 1, -1
FRONTAL_VIEWS = frozenset({"PA", "AP", "FRONTAL"})
LATERAL_VIEWS = frozenset({"LL", "RL", "LAT", "LATERAL"})


class SamplingError(CxrError, ValueError):
    """A pair-selection option or index that cannot be used."""

    def __init__(self, problem: str) -> None:
        super().__init__(None, problem)


def laterality_of(view: str) -> int:
    """FRONTAL (0), LATERAL (1) or UNKNOWN (-1) for a view position such as "PA" or "LL"."""
    words = view.strip().upper().split()
    if not words:
        return UNKNOWN
    if words[0] in FRONTAL_VIEWS:
        return FRONTAL
    if words[0] in LATERAL_VIEWS:
        return LATERAL
    return UNKNOWN


def laterality_codes(records: Sequence[Record]) -> np.ndarray:
    """int8 [N]: FRONTAL, LATERAL or UNKNOWN per record, from its view (decoded once per distinct view)."""
    if not records:
        return np.zeros(0, dtype=np.int8)
    views, inverse = np.unique(np.array([r.view for r in records]), return_inverse=True)
    return np.array([laterality_of(str(v)) for v in views], dtype=np.int8)[inverse.reshape(-1)]


def _codes(values: list[str]) -> np.ndarray:
    return np.unique(np.array(values), return_inverse=True)[1].reshape(-1).astype(np.int64)


@dataclass(frozen=True)
class QueueMasks:
    """Which queue entries serve each query (rows: queries, columns: queue entries)."""

    negatives: np.ndarray  # [B, K] bool: keys that enter the loss as negatives
    hard: np.ndarray  # [B, K] bool: S(x), the valid keys of the query's (known) laterality
    fallback: np.ndarray  # [B] bool: "same_laterality" query of unknown laterality given the default keys


class MedAugPairs:
    """Positive keys by patient / study / laterality and negative masks over a MoCo queue."""

    def __init__(self, records: Sequence[Record], train: Sequence[int] | np.ndarray | None = None,
                 studies: str = "same", laterality: str = "all") -> None:
        if studies not in STUDIES:
            raise SamplingError(f"studies must be one of {', '.join(STUDIES)}, not '{studies}'")
        if laterality not in LATERALITIES:
            raise SamplingError(f"laterality must be one of {', '.join(LATERALITIES)}, not '{laterality}'")
        self.n = len(records)
        self.studies, self.laterality = studies, laterality
        self.patient = _codes([r.patient_id for r in records])
        # A study is a (patient, study_id) pair: study ids need not be unique across patients.
        study_id = _codes([r.study_id for r in records])
        self.study = np.unique(self.patient * (int(study_id.max(initial=0)) + 1) + study_id, return_inverse=True)[1]
        self.study = self.study.reshape(-1).astype(np.int64)
        self.lateral = laterality_codes(records).astype(np.int64)
        train = np.arange(self.n) if train is None else np.asarray(train, dtype=np.int64).reshape(-1)
        if train.size and (train.min() < 0 or train.max() >= self.n):
            raise SamplingError(f"training indices must lie in 0..{self.n - 1}")
        self.in_train = np.zeros(self.n, dtype=bool)
        self.in_train[train] = True
        self.train = np.flatnonzero(self.in_train)
        order, starts = _groups(self.patient[self.train])  # training images grouped by patient
        self._members, self._starts = self.train[order], starts
        self._group = np.full(int(self.patient.max(initial=-1)) + 1, -1, dtype=np.int64)
        if self.train.size:  # with no training image every group stays -1 (no positives)
            self._group[self.patient[self._members[starts[:-1]]]] = np.arange(len(starts) - 1)
        self._counts: np.ndarray | None = None

    # --- positives ------------------------------------------------------------------------------
    def _check(self, i: int) -> int:
        if not 0 <= int(i) < self.n:
            raise SamplingError(f"record index {i} is outside 0..{self.n - 1}")
        return int(i)

    def candidates(self, i: int) -> np.ndarray:
        """S_c(x) for record i: the training images other than i that satisfy the criterion."""
        i = self._check(i)
        g = self._group[self.patient[i]]
        if g < 0:
            return np.empty(0, dtype=np.int64)
        own = self._members[self._starts[g]:self._starts[g + 1]]
        keep = own != i
        if self.studies == "same":
            keep &= self.study[own] == self.study[i]
        elif self.studies == "distinct":
            keep &= self.study[own] != self.study[i]
        lat, mine = self.lateral[own], self.lateral[i]
        if self.laterality == "same":
            keep &= (mine != UNKNOWN) & (lat == mine)
        elif self.laterality == "distinct":
            keep &= (mine != UNKNOWN) & (lat != UNKNOWN) & (lat != mine)
        return own[keep]

    def positive_key(self, i: int, rng: np.random.Generator) -> int:
        """A uniform draw from S_c(x) for record i; i itself (a second augmented view) when it is empty."""
        pool = self.candidates(i)
        return int(i) if pool.size == 0 else int(pool[rng.integers(pool.size)])

    def positive_counts(self) -> np.ndarray:
        """|S_c(x)| for every record [N] (int64), computed for all records at once with bincounts."""
        if self._counts is None:
            self._counts = self._count_all()
        return self._counts

    def _count_all(self) -> np.ndarray:
        w = self.in_train.astype(np.int64)
        known = self.lateral != UNKNOWN
        lat = np.where(known, self.lateral, 0)

        def per(group: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            """For each record: training images in its group, those of its laterality, those of known laterality."""
            size = int(group.max(initial=-1)) + 1
            total = np.bincount(group, weights=w, minlength=size).astype(np.int64)
            by_lat = np.bincount(group * 2 + lat, weights=w * known, minlength=2 * size).astype(np.int64)
            by_lat = by_lat.reshape(size, 2)
            return total[group], by_lat[group, lat] * known, by_lat[group].sum(axis=1)

        p_all, p_same, p_known = per(self.patient)
        s_all, s_same, s_known = per(self.study)
        me = self.in_train.astype(np.int64)  # the query itself, when it is a training image
        if self.studies == "all":
            g_all, g_same, g_known = p_all - me, p_same - me * known, p_known
        elif self.studies == "same":
            g_all, g_same, g_known = s_all - me, s_same - me * known, s_known
        else:  # other studies of the patient: x is in its own study, so nothing more to subtract
            g_all, g_same, g_known = p_all - s_all, p_same - s_same, p_known - s_known
        if self.laterality == "all":
            return g_all
        if self.laterality == "same":
            return g_same * known
        other = g_known - g_same - (me * known if self.studies != "distinct" else 0)
        return other * known

    def n_with_positive(self, indices: Sequence[int] | np.ndarray | None = None) -> int:
        """How many of `indices` (default: the training images) have a positive other than themselves."""
        chosen = self.train if indices is None else np.asarray(indices, dtype=np.int64)
        return int(np.count_nonzero(self.positive_counts()[chosen] > 0))

    # --- negatives ------------------------------------------------------------------------------
    def queue_masks(self, queries: Sequence[int] | np.ndarray, entries: Sequence[int] | np.ndarray,
                    strategy: str = "default") -> QueueMasks:
        """Masks [B, K] for queries (record indices [B]) over queue entries (record indices [K], -1 empty)."""
        if strategy not in NEGATIVE_STRATEGIES:
            raise SamplingError(f"the negative strategy must be one of {', '.join(NEGATIVE_STRATEGIES)}, "
                                f"not '{strategy}'")
        q = np.asarray(queries, dtype=np.int64).reshape(-1)
        e = np.asarray(entries, dtype=np.int64).reshape(-1)
        if q.size and (q.min() < 0 or q.max() >= self.n):
            raise SamplingError(f"query indices must lie in 0..{self.n - 1}")
        if e.size and (e.min() < -1 or e.max() >= self.n):
            raise SamplingError(f"queue entries must be record indices in 0..{self.n - 1} or -1 for empty")
        valid = (e[None, :] >= 0) & (e[None, :] != q[:, None])
        q_lat = self.lateral[q]
        e_lat = np.where(e >= 0, self.lateral[np.maximum(e, 0)], UNKNOWN)
        hard = valid & (q_lat[:, None] != UNKNOWN) & (e_lat[None, :] == q_lat[:, None])
        fallback = np.zeros(len(q), dtype=bool)
        negatives = valid
        if strategy == "same_laterality":
            fallback = q_lat == UNKNOWN
            negatives = np.where(fallback[:, None], valid, hard)
        return QueueMasks(negatives, hard, fallback)

    def negative_mask(self, i: int, candidates: Sequence[int] | np.ndarray, strategy: str = "default") -> np.ndarray:
        """bool [K]: which of the queue entries `candidates` (record indices, -1 empty) are negatives of i."""
        return self.queue_masks([self._check(i)], candidates, strategy).negatives[0]
