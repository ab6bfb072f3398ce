"""What identifies the weights behind a probability map: each file's name, size and content digest.

Maps (ensemble, out-of-fold) are kept while the bundles that made them hold the same weights.
File times cannot tell: ``cp -r`` of a work_dir gives every file a new time, and its maps
would all be predicted again. A digest of the bytes can. Each bundle caches its digests in
``.weights_digest.json``, keyed by size and time, so a file is read once, and once more after
it is copied or trained again (a read-only bundle keeps them for the process only).

Each map also records its image's size and time (:func:`image_stamp`): an image rewritten
since (re-converted in place) is predicted again.

Manifests written before digests recorded ``[name, size, mtime_ns]``; their signatures are
still recognised (:func:`bundles_signature` with ``legacy=True``), so an upgrade predicts
nothing again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["DIGEST_CACHE", "bundles_signature", "changed_bundles", "configs_digest", "copied_weights", "file_digest",
           "image_stamp", "replaced_weights", "same_source", "weights_stamp"]

DIGEST_CACHE = ".weights_digest.json"
_MEMO: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """``sha1:<hex>`` of a file's bytes.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile(delete=False) as fh:
    ...     _ = fh.write(b"abc")
    >>> file_digest(fh.name)
    'sha1:a9993e364706816aba3e25717850c26c9cd0d89d'
    """
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return "sha1:" + h.hexdigest()


def _read_cache(root: Path) -> dict:
    try:
        data = json.loads((root / DIGEST_CACHE).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(root: Path, cache: dict) -> None:
    tmp = root / f".tmp-{os.getpid()}-{DIGEST_CACHE}"
    try:
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, root / DIGEST_CACHE)
    except OSError:  # a read-only bundle: the in-process memo still spares re-reading
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def weights_stamp(bundle: str | os.PathLike, legacy: bool = False) -> list[list[Any]]:
    """``[name, size, digest]`` of each weights file of a bundle (``legacy``: ``[name, size,
    mtime_ns]``, the stamp of manifests written before digests). Files that vanish while
    listed are left out."""
    from auto3dseg.orchestration.workdir import weight_files

    root = Path(bundle)
    cache = None if legacy else _read_cache(root)
    out, dirty = [], False
    for name in weight_files(root):
        path = root / name
        try:
            st = path.stat()
            if legacy:
                out.append([name, st.st_size, st.st_mtime_ns])
                continue
            key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
            hit = cache.get(name)
            if isinstance(hit, dict) and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
                digest = str(hit.get("digest"))
            else:
                digest = _MEMO.get(key) or file_digest(path)
                cache[name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "digest": digest}
                dirty = True
            _MEMO[key] = digest
        except OSError:
            continue
        out.append([name, st.st_size, digest])
    if dirty:
        _write_cache(root, cache)
    return out


def bundles_signature(bundles: Sequence[Mapping[str, Any]], work: Path | None, legacy: bool = False) -> str:
    """A short hash of MONAI algo records (their id and score) and their weights' stamps: it
    changes when a bundle is trained again or replaced, not when the work_dir is copied."""
    from monai.utils.enums import AlgoKeys

    text = json.dumps(sorted((str(b[AlgoKeys.ID]), float(b[AlgoKeys.SCORE] or 0),
                              weights_stamp(work / str(b[AlgoKeys.ID]), legacy) if work else None)
                             for b in bundles))
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def changed_bundles(manifest: Mapping[str, Any], work: str | os.PathLike) -> list[str]:
    """What became of the bundles that made a manifest (``ensemble.json``) since: one phrase per
    bundle trained again or whose weights are gone (empty for maps of the bundles as they are,
    and for manifests that recorded no weights)."""
    out = []
    for b in manifest.get("bundles", []):
        recorded = b.get("weights")
        if recorded is None:
            continue
        legacy = any(len(w) > 2 and not isinstance(w[2], str) for w in recorded)
        now = weights_stamp(Path(work) / str(b["name"]), legacy)
        gone = sorted({w[0] for w in recorded} - {w[0] for w in now})
        if not now:
            out.append(f"{b['name']}'s weights are gone")
        elif gone:
            out.append(f"{b['name']}'s {', '.join(gone)} {'is' if len(gone) == 1 else 'are'} gone")
        elif legacy and [w[:2] for w in now] == [w[:2] for w in recorded] and now != recorded:
            out.append(f"{b['name']}'s weights have new file times (trained again, or copied without keeping them: "
                       "cp -a keeps them; ensembles written from now on tell the two apart)")
        elif now != recorded:
            out.append(f"{b['name']} was trained again")
    return out


def image_stamp(path: str | os.PathLike) -> list[int] | None:
    """``[size, mtime_ns]`` of an image, recorded with its map: an image rewritten since (re-converted
    in place) is predicted again, not taken as up to date."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def same_source(item: Mapping[str, Any], image: str | None = None) -> bool:
    """The map of ``item`` was made from ``image`` (default: its own) as it is now; maps recorded
    before stamps were kept are taken as current."""
    recorded = item.get("source_stamp")
    return recorded is None or recorded == image_stamp(image or item["image"])


def copied_weights(bundles: Sequence[str | os.PathLike]) -> list[tuple[str, str]]:
    """Pairs ``(bundle, other)`` of ``bundles`` whose best weights (``model/model.pt``, else
    their first weights file) are the same bytes: one copied over the other. Bundles of
    different folds never train to the same weights, so such a model predicts items it was
    trained on as "out-of-fold".

    >>> copied_weights([])
    []
    """
    first: dict[str, str] = {}
    pairs = []
    for b in bundles:
        stamp = weights_stamp(b)
        best = next((w for w in stamp if w[0].endswith("model.pt")), stamp[0] if stamp else None)
        if best is None:
            continue
        name = Path(b).name
        if best[2] in first:
            pairs.append((name, first[best[2]]))
        else:
            first[best[2]] = name
    return pairs


def configs_digest(bundle: str | os.PathLike) -> str | None:
    """A short hash of a bundle's ``configs/*.yaml`` settings, leaving out where its data are
    (re-pointed when the dataset moves): maps made before an inference setting was edited
    (``sw_overlap``, ...) are told apart. None when a config cannot be read.

    >>> len(configs_digest("/no/such/bundle"))  # no configs: the digest of nothing
    12
    """
    import yaml

    from auto3dseg.orchestration.workdir import DATA_KEYS

    h = hashlib.sha1()
    for f in sorted((Path(bundle) / "configs").glob("*.yaml")):
        try:
            cfg = yaml.safe_load(f.read_text())
        except (OSError, yaml.YAMLError):
            return None
        if isinstance(cfg, dict):
            cfg = {k: v for k, v in cfg.items() if k not in DATA_KEYS}
        h.update(f.name.encode() + json.dumps(cfg, sort_keys=True, default=str).encode())
    return h.hexdigest()[:12]


def replaced_weights(bundle: str | os.PathLike, record: Mapping[str, Any] | None) -> list[str]:
    """Weights files of ``bundle`` that are not the bytes its training wrote (``record``: its
    ``training_done.json``, which keeps their digests): replaced since, by hand or by another
    bundle's model. Empty for records written before digests were kept."""
    recorded = (record or {}).get("weights_digest")
    if not isinstance(recorded, dict) or not recorded:
        return []
    now = {w[0]: w[2] for w in weights_stamp(bundle)}
    return sorted(name for name, digest in recorded.items() if name in now and now[name] != digest)
