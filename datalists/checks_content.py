"""Checks of a datalist's content: class table and labels, item values, folds, annotated class
ids (duplicates are in :mod:`datalists.checks_duplicates`)."""

from __future__ import annotations

from collections import Counter, defaultdict

from .schema import (
    _LABELLED_SECTIONS,
    _PATH_KEYS,
    _SECTIONS,
    FORMAT_PREFIX,
    _is_int,
    _short,
    _whole,
)


class ContentChecks:
    """Checks of a datalist's content: class table and labels, item values, folds, annotated
    class ids.

    Mixed into the validator's checker, which provides ``data``, ``src``, ``problem``, ``items``
    and ``desc``.
    """

    # ----------------------------------------------------------------- classes

    def check_classes(self) -> None:
        table = self.data.get("class_table")
        labels = self.data.get("labels")
        names: dict[int, str] = {}
        if isinstance(table, list):
            self.class_info_known = True
            if not table:
                self.problem("'class_table'", "class_table is empty; list the classes or drop the key")
            rows = [
                (j, r) for j, r in enumerate(table)
                if isinstance(r, dict) and _is_int(r.get("id")) and isinstance(r.get("name"), str)
            ]
            by_id: dict[int, list[int]] = defaultdict(list)
            by_name: dict[str, list[int]] = defaultdict(list)
            for j, r in rows:
                by_id[r["id"]].append(j)
                by_name[r["name"]].append(j)
                names.setdefault(r["id"], r["name"])
            for cid, js in sorted(by_id.items()):
                if len(js) > 1:
                    self.problem(
                        "'class_table'",
                        f"id {cid} is used by rows {js} ({', '.join(repr(table[j]['name']) for j in js)}); "
                        "give each class its own id",
                    )
            for cname, js in sorted(by_name.items()):
                if len(js) > 1:
                    self.problem("'class_table'", f"name {cname!r} is used by rows {js}; give each class its own name")
            k = len(table)
            ids = set(by_id)
            if ids and ids != set(range(1, k + 1)):
                missing = sorted(set(range(1, k + 1)) - ids)
                extra = sorted(ids - set(range(1, k + 1)))
                detail = []
                if missing:
                    detail.append(f"missing {missing}")
                if extra:
                    detail.append(f"out of range {extra}")
                self.problem(
                    "'class_table'",
                    f"ids must be 1..{k} without gaps (label value k means class k), got "
                    f"{sorted(ids)} ({'; '.join(detail)}); renumber the rows 1..{k}",
                )
            for j, r in rows:
                parts = r.get("parts")
                if not isinstance(parts, list):
                    continue
                bad = [p for p in parts if _is_int(p) and p not in ids]
                if bad:
                    self.problem(
                        f"'class_table[{j}]' ({r['name']!r})",
                        f"parts {parts} name id(s) {bad} that class_table does not define; "
                        "parts must be ids of other class_table rows (our ids, not CellMap ids)",
                    )
                if r["id"] in parts:
                    self.problem(f"'class_table[{j}]' ({r['name']!r})", "lists itself among its parts; remove it")
        if isinstance(labels, dict):
            self.class_info_known = True
            lab = {int(k): v for k, v in labels.items() if isinstance(k, str) and k.isdigit()}
            if isinstance(table, list):
                for cid, cname in sorted(names.items()):
                    if cid not in lab:
                        self.problem(
                            "'labels'",
                            f"has no entry for class id {cid} ({cname!r}) of class_table; "
                            f"add \"{cid}\": \"{cname}\" or drop 'labels'",
                        )
                    elif lab[cid] != cname:
                        self.problem(
                            "'labels'",
                            f"labels[\"{cid}\"] is {lab[cid]!r} but class_table id {cid} is {cname!r}; "
                            "make them agree (re-convert, or fix one of them)",
                        )
                for cid in sorted(set(lab) - set(names) - {0}):
                    self.problem(
                        "'labels'",
                        f"labels[\"{cid}\"] ({lab[cid]!r}) is not a class_table id; "
                        "remove it or add the class to class_table",
                    )
            else:
                names = {cid: n for cid, n in lab.items() if cid != 0}
        self.class_names = dict(sorted(names.items()))

    # ----------------------------------------------------------------- items

    def check_label_rules(self) -> None:
        """A CellMap datalist converted before the label rules changed (:data:`LABEL_RULES`) with
        training items that annotate two overlapping classes: a voxel of both counts for one."""
        from .annotated import decode_annotated
        from .cellmap_classes import LABEL_RULES, uncovered_overlaps

        table = self.data.get("class_table")
        rules = self.data.get("label_rules", 1)
        if not str(self.data.get("format", "")).startswith(FORMAT_PREFIX) or not _is_int(rules) \
                or rules >= LABEL_RULES or not isinstance(table, list):
            return
        names = {r["id"]: str(r.get("name")) for r in table if isinstance(r, dict) and "cellmap_id" in r
                 and _is_int(r.get("id"))}
        seen: dict[tuple, list] = {}
        hits = []
        for i, it in self.items("training"):
            ids = it.get("annotated")
            if not isinstance(ids, list):
                mask = it.get("annotated_mask")
                ids = decode_annotated(int(mask)) if _whole(mask) is not None and int(mask) >= 0 else list(names)
            key = tuple(names[j] for j in sorted(j for j in ids if _is_int(j)) if j in names)
            if key not in seen:
                seen[key] = uncovered_overlaps(key)
            if seen[key]:
                hits.append((i, it, seen[key]))
        if hits:
            a, b, shared = hits[0][2][0]
            self.warnings.append(
                f"{self.src}: converted by an older version (label_rules {rules}, now {LABEL_RULES}): {len(hits)} "
                f"training item(s) annotate two overlapping classes, e.g. {hits[0][1].get('image')} ({a} and {b}, "
                f"sharing {', '.join(shared[:3])}{', ...' if len(shared) > 3 else ''}). There a voxel of both was "
                "labelled as one of them, and the other is trained as absent. Run the converter's command again on "
                "the same --output_dir (those crops convert again), then --mode analyze --force")

    def check_item_values(self) -> None:
        for section in _SECTIONS:
            for i, item in self.items(section):
                if self.allow_number_lists:
                    continue
                for key, value in item.items():
                    if key in _PATH_KEYS or not isinstance(value, list) or not value:
                        continue
                    if any(isinstance(x, str) for x in value):
                        continue  # reported by the schema as strings to be joined
                    alt = (" or store it as the integer bitmask 'annotated_mask' (bit id-1 set per class)"
                           if key == "annotated" else "")
                    self.problem(
                        self.desc(section, i),
                        f"'{key}' is a list of numbers {_short(value)}; MONAI's datafold_read (used by "
                        f"DataAnalyzer and the Auto3DSeg templates) calls os.path.join(dataroot, v) on every "
                        f"element of a list value and raises TypeError on numbers; move '{key}' to the "
                        f"items_file side file keyed by image path{alt}; pass allow_number_lists=True "
                        f"(--allow-number-lists) only if such keys are removed before MONAI reads the datalist",
                    )

    def check_folds(self) -> None:
        train = self.items("training")
        if not train:
            return
        with_fold = [(i, it) for i, it in train if "fold" in it]
        if not with_fold:
            validation = self.data.get("validation")
            if isinstance(validation, list) and validation:
                self.warnings.append(
                    f"{self.src}: no training item has a 'fold'; MONAI's AutoRunner will use the "
                    "'validation' list as a single fold, but datafold_read alone gives no validation set"
                )
                return
            self.problems.append(
                f"{self.src}: no folds: add a 'fold' to every training item, e.g. convert with "
                "--num_folds 5; without folds there is no validation set (MONAI's datafold_read puts "
                "items without a fold into training, and an Auto3DSeg template then divides by zero)"
            )
            return
        # 1.0 counts as fold 1, as training reads it (int(fold)); 1.5 and "1" are schema problems.
        folds = [(i, f) for i, f in ((i, _whole(it["fold"])) for i, it in with_fold) if f is not None and f >= 0]

        if self.num_folds_arg is not None:
            nf, origin = int(self.num_folds_arg), "the num_folds argument"
        elif (_whole(self.data.get("num_folds")) or 0) >= 1:
            nf, origin = int(self.data["num_folds"]), "the datalist's num_folds"
        elif folds:
            nf, origin = max(f for _, f in folds) + 1, "the largest fold + 1"
        else:
            return
        self.num_folds = nf

        if len(with_fold) < len(train):
            for i, it in train:
                if "fold" not in it:
                    self.problem(
                        self.desc("training", i),
                        f"has no 'fold' while {len(with_fold)} other training item(s) have one; "
                        f"datafold_read would always put it in training; give it a fold in 0..{nf - 1} "
                        "(or re-convert with --num_folds)",
                    )

        counts = Counter(f for _, f in folds)
        self.fold_counts = dict(sorted(counts.items()))
        used = sorted(f for f in counts if f < nf)
        for i, f in folds:
            if f >= nf:
                self.problem(
                    self.desc("training", i),
                    f"fold {f} is outside 0..{nf - 1} (num_folds {nf} from {origin}); "
                    f"set it to a fold in that range or set num_folds to at least {f + 1}",
                )
        if len(used) == 1:
            self._single_fold(used[0], nf, origin)
            return
        for f in range(nf):
            if counts.get(f, 0) == 0:
                self.problems.append(
                    f"{self.src}: fold {f} has no training item (num_folds {nf} from {origin}); move items into "
                    f"fold {f}, or number the {len(used)} folds that have items 0..{len(used) - 1} and set "
                    f"num_folds to {len(used)}"
                )

    def _single_fold(self, fold: int, nf: int, origin: str) -> None:
        """Every training item is in one fold: that fold's training set is empty."""
        if self.data.get("kind") == "cells2d":
            fix = ("re-convert with python -m converters.cells.convert --num_folds 2 (or more) from at "
                   "least 2 labelled images (an image and its tiles stay in one fold)")
        elif str(self.data.get("format", "")).startswith(FORMAT_PREFIX):
            fix = ("re-convert with python -m converters.cellmap.convert ... --num_folds 2 (or more): with "
                   "fewer crops than folds it cuts crops into slabs along their longest axis, one fold each, "
                   "--fold_gap voxels apart (its conversion_report.md says why when a crop is too small to cut)")
        else:
            fix = 'give the training items at least 2 different folds ("fold": 0 for some, 1 for the others)'
        text = (f"{self.src}: cannot be cross-validated: every training item is in fold {fold} (num_folds {nf} "
                f"from {origin}), so when fold {fold} validates no item is left to train on; {fix}")
        if self.allow_single_fold:
            self.warnings.append(f"{text} (accepted for analysis only: allow_single_fold)")
        else:
            self.problems.append(f"{text}; to check it for analysis only (no training): python -m datalists.validate "
                                 "--allow-single-fold, or validate_datalist(..., allow_single_fold=True)")

    def _check_annotated_ids(self, where: str, ids: list[int], key: str) -> None:
        if not self.class_names:
            return
        unknown = [c for c in ids if c not in self.class_names]
        if not unknown:
            return
        k = max(self.class_names)
        hint = ""
        table = self.data.get("class_table")
        if isinstance(table, list):
            by_cellmap = {r.get("cellmap_id"): r for r in table if isinstance(r, dict)}
            looks = [f"{c} is CellMap's id of {by_cellmap[c]['name']!r} (our id {by_cellmap[c].get('id')})"
                     for c in unknown if c in by_cellmap]
            if looks:
                hint = "; these look like CellMap ids: " + ", ".join(looks)
        self.problem(
            where,
            f"{key} lists class id(s) {unknown} that class_table does not define (ids are 1..{k}); "
            f"use ids from class_table, not CellMap ids, or add the classes{hint}",
        )

    def check_annotated(self) -> None:
        warned_unknown = False
        for section in _SECTIONS:
            for i, item in self.items(section):
                where = self.desc(section, i)
                ann = item.get("annotated")
                ann_ids: set[int] | None = None
                if isinstance(ann, list) and all(_is_int(a) for a in ann):
                    ann_ids = set(ann)
                    if not ann:
                        self.warnings.append(f"{self.src}: {where}: annotated is empty: the item annotates no class")
                    self._check_annotated_ids(where, list(ann), "annotated")
                mask = _whole(item.get("annotated_mask"))  # 4.0 is 4 to training (int(value)): checked as 4
                if mask is not None and mask >= 0:
                    mask_ids = {b + 1 for b in range(mask.bit_length()) if mask >> b & 1}
                    self._check_annotated_ids(where, sorted(mask_ids), f"annotated_mask {mask}")
                    if ann_ids is not None and ann_ids != mask_ids:
                        self.problem(
                            where,
                            f"annotated {sorted(ann_ids)} and annotated_mask {mask} (ids {sorted(mask_ids)}) "
                            "disagree; keep one of them",
                        )
                if (ann is not None or mask is not None) and not self.class_info_known and not warned_unknown:
                    warned_unknown = True
                    self.warnings.append(
                        f"{self.src}: items list annotated classes but the datalist has no class_table or "
                        "labels, so their ids were not checked"
                    )

    def check_annotated_mask_everywhere(self) -> None:
        """Refuse labelled items without ``annotated_mask`` when other items have one.

        Training reads an item without ``annotated_mask`` as annotating every class
        (``annotate_all_if_missing``), so in a datalist whose items say which classes they
        annotate, one that says nothing would teach its unannotated classes as background.
        """
        items = [(s, i, it) for s in _LABELLED_SECTIONS for i, it in self.items(s)]
        without = [self.desc(s, i) for s, i, it in items if "annotated_mask" not in it]
        if not without or len(without) == len(items):
            return
        shown = "; ".join(without[:3]) + (f"; and {len(without) - 3} more" if len(without) > 3 else "")
        self.problems.append(
            f"{self.src}: {len(without)} of {len(items)} labelled items have no 'annotated_mask' (the other "
            f"{len(items) - len(without)} have it): {shown}; training would treat them as annotating every "
            "class, so their unannotated classes would be learnt as background; give each an annotated_mask "
            "(bit id-1 set for every class its label annotates), or re-convert the data "
            "(python -m converters.cellmap.convert writes it for every item)"
        )
