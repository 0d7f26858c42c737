"""Google Cloud's naming rules: Compute Engine resource names, labels, project IDs, zones,
buckets. Pure functions, no SDK: the catalog validates a connector with them at load."""

from __future__ import annotations

import hashlib
import re

#: RFC 1035 as Compute Engine applies it to images, instances and families
#: (the discovery document's Image.name pattern)
NAME = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
#: https://cloud.google.com/compute/docs/labeling-resources#requirements
LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
MAX_LABELS = 64
#: https://cloud.google.com/resource-manager/docs/creating-managing-projects (with the
#: legacy domain-scoped form "example.com:project")
PROJECT = re.compile(r"(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]")
ZONE = re.compile(r"[a-z]+-[a-z]+[0-9]+-[a-z]")
#: a region ("us-central1") or a multi-region ("us", "eu", "asia")
STORAGE_LOCATION = re.compile(r"[a-z]+(?:-[a-z]+[0-9]+)?")
#: https://cloud.google.com/storage/docs/buckets#naming (dots allow up to 222 characters)
BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
LICENSE = re.compile(r"(?:https://(?:www|compute)\.googleapis\.com/compute/v1/)?"
                     r"projects/[a-z0-9.:-]+/global/licenses/[a-z0-9-]+")
#: what a name cut to fit keeps of its readable part, before "-" and the digest
_DIGEST = 8


def is_name(value: str) -> bool:
    return NAME.fullmatch(value) is not None


def image_name(wanted: str, task_id: str) -> str:
    """A valid Compute Engine name for the task's ``image_name`` (template + time + random,
    unique per task): kept as it is when valid; else lowercased, every run of other
    characters made one "-", a letter put first, cut to fit, and a digest of the task and
    the wanted name appended, so two tasks whose names differ only in what was replaced
    (``A.b``, ``a_b``) still get two names. The same task always gets the same name."""
    if is_name(wanted):
        return wanted
    digest = hashlib.sha256(f"{task_id}\0{wanted}".encode()).hexdigest()[:_DIGEST]
    readable = re.sub(r"[^a-z0-9]+", "-", wanted.lower()).strip("-")
    if not readable or not readable[0].isalpha():
        readable = f"lb-{readable}".rstrip("-")
    readable = readable[:63 - 1 - _DIGEST].rstrip("-")
    name = f"{readable}-{digest}"
    assert is_name(name), name
    return name


def label_value(value: str) -> str:
    """``value`` as a label value: lowercase, characters other than letters, digits, "_"
    and "-" made "_", at most 63 characters (a template name may hold dots)."""
    return re.sub(r"[^a-z0-9_-]", "_", value.lower())[:63]


def label_problems(labels: dict[str, str]) -> list[str]:
    """What breaks Compute Engine's label rules, one line per label (empty: none)."""
    problems = []
    for key, value in labels.items():
        if LABEL_KEY.fullmatch(key) is None:
            problems.append(f"label key {key!r}: 1-63 characters, lowercase letters, digits, '_' "
                            "and '-', starting with a letter")
        if not isinstance(value, str) or LABEL_VALUE.fullmatch(value) is None:
            problems.append(f"label {key!r} value {value!r}: at most 63 characters, lowercase "
                            "letters, digits, '_' and '-'")
    if len(labels) > MAX_LABELS:
        problems.append(f"{len(labels)} labels: at most {MAX_LABELS}")
    return problems
