"""Group schemes: which demographic group each sample belongs to.

A scheme reads one attribute of a sample (its source attribute, e.g. ``race``) and maps
the label to a group name, or to ``None`` to drop the sample. Group names keep the
dataset's spelling (``East Asian``); config keys use identifier aliases (``East_Asian``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FAIRFACE7 = (
    "White",
    "Black",
    "Latino_Hispanic",
    "East Asian",
    "Southeast Asian",
    "Indian",
    "Middle Eastern",
)
RFW4 = ("African", "Asian", "Caucasian", "Indian")
# UTKFace encodes race as an integer in the file name: 0 White, 1 Black, 2 Asian,
# 3 Indian, 4 Others (Hispanic, Latino, Middle Eastern).
UTKFACE5 = ("White", "Black", "Asian", "Indian", "Others")


@dataclass(frozen=True)
class GroupScheme:
    """Mapping from a source attribute's labels to ordered group names.

    Attributes
    ----------
    name:
        Scheme name used in configs (``data.group_scheme``).
    source_attribute:
        Attribute whose label decides the group (``race``).
    group_names:
        Groups in report order.
    mapping:
        Source label -> group name, or ``None`` to drop samples with that label.
        Labels not in the mapping are an error, so a typo never silently drops data.
    """

    name: str
    source_attribute: str
    group_names: tuple[str, ...]
    mapping: dict[str, str | None] = field(default_factory=dict)

    def group_of(self, label: str) -> str | None:
        if label not in self.mapping:
            raise KeyError(label)
        return self.mapping[label]


def _identity_scheme(name: str, attribute: str, names: tuple[str, ...]) -> GroupScheme:
    return GroupScheme(name, attribute, names, {n: n for n in names})


SCHEMES: dict[str, GroupScheme] = {
    "fairface7": _identity_scheme("fairface7", "race", FAIRFACE7),
    "rfw4": _identity_scheme("rfw4", "race", RFW4),
    "utkface5": _identity_scheme("utkface5", "race", UTKFACE5),
    # FairFace onto RFW's four groups; Latino_Hispanic and Middle Eastern have no RFW
    # counterpart and are dropped (the drop count is logged by apply_group_scheme).
    "fairface_to_rfw4": GroupScheme(
        "fairface_to_rfw4",
        "race",
        RFW4,
        {
            "White": "Caucasian",
            "Black": "African",
            "East Asian": "Asian",
            "Southeast Asian": "Asian",
            "Indian": "Indian",
            "Latino_Hispanic": None,
            "Middle Eastern": None,
        },
    ),
}


def identifier(name: str) -> str:
    """Return the config-key alias of a group name (``East Asian`` -> ``East_Asian``)."""
    return re.sub(r"\W+", "_", name).strip("_")


def resolve_group_key(key: str, group_names: list[str] | tuple[str, ...]) -> str:
    """Map a config key (a group name or its identifier alias) to the group name.

    Raises
    ------
    KeyError
        If ``key`` matches no group; the message lists the accepted keys.
    """
    for name in group_names:
        if key == name or key == identifier(name):
            return name
    accepted = ", ".join(identifier(n) for n in group_names)
    raise KeyError(f"unknown group {key!r}; expected one of: {accepted}")


def get_scheme(name: str) -> GroupScheme:
    """Return a registered group scheme by name."""
    try:
        return SCHEMES[name]
    except KeyError:
        known = ", ".join(sorted(SCHEMES))
        raise ValueError(
            f"unknown group scheme {name!r}; expected one of: {known}, 'native', "
            "or an intersection such as 'fairface7*gender'"
        ) from None
