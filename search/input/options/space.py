"""Run options: the search space's shared dimensions (--help group "search space").

One value pins a dimension, LO:HI bounds it. Their valid ranges are the search space's own
(search_spaces.check_space: alpha in [0, 1], T > 0, per family for depth and width), checked
before Ray starts, so the table does not repeat them."""
from __future__ import annotations

from functools import partial

from kdtune.search.input import arg_types
from kdtune.search.input.options import values
from kdtune.search.input.schema import Option

_option = partial(Option, group="search space (one value pins, LO:HI bounds)")


def _size_help(name: str) -> str:
    return f"student {name}, for every family or per family: FAMILY=LO:HI,... (e.g. mlp=1:3,cifar_resnet=8:20)"


OPTIONS = (
    _option("alpha", arg_types.search_dim, None, "space.alpha", "KD weight in [0,1]"),
    _option("temperature", arg_types.search_dim, None, "space.temperature", "softmax temperature T > 0"),
    _option("lr", arg_types.search_dim, None, "space.lr", "learning rate"),
    _option("depth", arg_types.size_dim, None, "space.depth", _size_help("depth"), merge=values.per_family),
    _option("width", arg_types.size_dim, None, "space.width", _size_help("width"), merge=values.per_family),
)
