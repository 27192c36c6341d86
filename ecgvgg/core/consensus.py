"""Record consensus: a record's beats of one shape and rhythm answer together.

Beats of one patient that look alike and come at alike intervals are, mostly, of one class: a
premature ventricular beat repeats its shape through a record, and a normal beat that the model
calls fusion is one of hundreds of normal beats that look just like it. Within each record the
beats are clustered (k-means on the first principal components of each beat minus its reference,
with the rhythm values beside them), and each beat's class probabilities move towards its
cluster's mean:

    p' = (1 - w) x p + w x mean of p over the beat's cluster

No label is read: the clusters are those of the beats being classified, as the record's
reference beat is. Records of fewer than :data:`MIN_BEATS` beats are left as they are.
"""

from __future__ import annotations

import numpy as np

#: Fewer beats than this in a record: too few to cluster, the probabilities stay as they are.
MIN_BEATS = 20
#: Principal components of the beat shape that the clusters are formed on.
COMPONENTS = 8
#: At least this many beats per cluster on average (short records get fewer clusters).
BEATS_PER_CLUSTER = 10
#: At most this many clusters per record, unless a model says otherwise (``record_clusters``).
CLUSTERS = 60


def record_consensus(
    probs: np.ndarray,
    features: np.ndarray,
    groups: np.ndarray,
    weight: float,
    clusters: int,
    *,
    rhythm: int = 0,
    seed: int = 0,
) -> np.ndarray:
    """``probs`` moved by ``weight`` towards the mean of their beat's cluster within its record (``groups``).

    ``features``: per beat its shape, then its ``rhythm`` rhythm values (the rows of a table as
    :func:`ecgvgg.core.rows.relative_rows` gives them: each beat minus its reference).
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    probs = np.asarray(probs, dtype=np.float32)
    if not weight or len(probs) == 0:
        return probs
    features = np.asarray(features, dtype=np.float32)
    shape_columns = features.shape[1] - rhythm
    out = probs.copy()
    for group in np.unique(np.asarray(groups)):
        idx = np.flatnonzero(np.asarray(groups) == group)
        if len(idx) < MIN_BEATS:
            continue
        shape = features[idx, :shape_columns]
        z = PCA(n_components=min(COMPONENTS, *shape.shape), random_state=seed).fit_transform(shape)
        z = z / (z[:, :1].std() + 1e-9)
        if rhythm:
            r = features[idx, shape_columns:]
            z = np.hstack([z, (r - r.mean(axis=0)) / (r.std(axis=0) + 1e-9)])
        k = max(2, min(clusters, len(idx) // BEATS_PER_CLUSTER))
        labels = KMeans(k, n_init=2, random_state=seed).fit_predict(z)
        means = np.stack([probs[idx][labels == c].mean(axis=0) if (labels == c).any() else probs[idx[0]] for c in range(k)])
        out[idx] = (1 - weight) * probs[idx] + weight * means[labels]
    return out
