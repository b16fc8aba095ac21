"""Has a model trained on this run's validation images? Answered from a recorded split.

Every kdtune checkpoint stores the split record of the data it trained on
(`DatasetBundle.split`: dataset, pool size, seed, val_fraction, subset and a digest of
the validation indices). A teacher trained on another seed or val_fraction has trained on
some of this run's validation images, and the KD gain and agreement measured on them are
then inflated. Since a split depends only on (pool labels, seed, val_fraction, subset),
the teacher's training rows are re-drawn here and intersected with this run's val rows.
"""
from __future__ import annotations

from .bundle import DatasetBundle
from .splits import index_digest, split_indices


def val_images_seen(record: dict, bundle: DatasetBundle) -> int | None:
    """How many of `bundle.val`'s images the split `record` trained on.

    0 when the validation splits are the same (the record's training rows are the rest of
    the pool). None when the record cannot be re-drawn from this data: another pool (other
    files), or a re-draw whose val digest differs from the recorded one.
    """
    own = bundle.split
    if own is None or bundle.pool_labels is None:
        raise ValueError("the bundle carries no split record: build it with create_dataset")
    if record.get("dataset") != own["dataset"] or record.get("pool") != own["pool"]:
        return None
    if record.get("val_indices_sha256") == own["val_indices_sha256"]:
        return 0
    try:
        their_train, their_val = split_indices(bundle.pool_labels, float(record["val_fraction"]),
                                               int(record["seed"]), record.get("subset"))
    except (KeyError, TypeError, ValueError):
        return None
    if index_digest(their_val) != record.get("val_indices_sha256"):
        return None
    _, our_val = split_indices(bundle.pool_labels, own["val_fraction"], own["seed"])
    return len(set(their_train.tolist()) & set(our_val.tolist()))
