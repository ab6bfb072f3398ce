"""What a template needs before ``--mode generate`` runs it: a local templates folder that holds
each chosen algorithm, the modules its scripts import, a GPU where its generation or training
reads one; and one line for a template whose ``scripts/algo.py`` does not import."""

from __future__ import annotations

import ast
import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["check_templates", "template_import_error", "template_problems"]


def _module_imports(path: Path, scripts: Path, seen: set[Path]) -> tuple[dict[str, str], bool]:
    """Modules that ``path`` and the sibling scripts it imports import at module level (not in
    ``try`` or functions) → the script importing each; and whether any names ``cuda:0``."""
    if path in seen or not path.is_file():
        return {}, False
    seen.add(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    cuda0 = any(isinstance(n, ast.Constant) and n.value == "cuda:0" for n in ast.walk(tree))
    found: dict[str, str] = {}
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If):
            todo += node.body + node.orelse
            continue
        tops = ([a.name.split(".")[0] for a in node.names] if isinstance(node, ast.Import) else
                [(node.module or "").split(".")[0]] if isinstance(node, ast.ImportFrom) else [])
        for top in filter(None, tops):
            sibling = scripts / f"{top}.py"
            if sibling.is_file() or (isinstance(node, ast.ImportFrom) and node.level):
                sub, c = _module_imports(sibling, scripts, seen)
                found = {**sub, **found}
                cuda0 = cuda0 or c
            else:
                found.setdefault(top, path.name)
    return found, cuda0


def _generation_reads_gpu(algo_py: Path) -> bool:
    """Does ``fill_template_config`` (through module-level functions of ``algo.py``) read the
    GPUs' memory (``torch.cuda.mem_get_info``), which fails with no GPU?"""
    if not algo_py.is_file():
        return False
    tree = ast.parse(algo_py.read_text())
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    starts = [m for c in tree.body if isinstance(c, ast.ClassDef) for m in c.body
              if isinstance(m, ast.FunctionDef) and m.name == "fill_template_config"]
    seen: set[str] = set()
    while starts:
        for node in ast.walk(starts.pop()):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr in ("mem_get_info", "get_device_properties"):
                return True
            if isinstance(f, ast.Name) and f.id in funcs and f.id not in seen:
                seen.add(f.id)
                starts.append(funcs[f.id])
    return False


def template_problems(name: str, template: str | os.PathLike, *, cuda: bool | None = None,
                      environ: Mapping[str, str] | None = None) -> tuple[list[str], list[str]]:
    """What template ``name`` (folder ``template``) needs that this machine lacks: (errors, notes).

    Errors: a module its ``scripts/{algo,train,infer}.py`` import that is not installed
    (official dints and swinunetr import ``mlflow``); no GPU when its generation reads GPU
    memory (official swinunetr) or its training runs on ``cuda:0`` (official dints and
    swinunetr). Inside a SLURM job the training's GPU is only a note: there generation runs
    in a CPU job and training in GPU array tasks.

    Examples
    --------
    >>> errors, notes = template_problems("dints", "official/dints", cuda=False)  # doctest: +SKIP
    >>> errors[-1]  # doctest: +SKIP
    "dints's training needs a GPU (its scripts run on cuda:0) and none is visible here: run on a GPU machine, ..."
    """
    env = os.environ if environ is None else environ
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    scripts = Path(template) / "scripts"
    errors: list[str] = []
    notes: list[str] = []
    fix = "or leave it out (e.g. --algos segresnet)"
    reported: set[str] = set()
    for entry, what in (("algo.py", "generation"), ("train.py", "training"), ("infer.py", "inference")):
        imports, cuda0 = _module_imports(scripts / entry, scripts, set())
        for mod, where in sorted(imports.items()):
            if mod not in reported and mod != "__future__" and importlib.util.find_spec(mod) is None:
                reported.add(mod)
                errors.append(f"{name}'s {what} imports {mod} (scripts/{where}), which is not installed here: "
                              f"pip install {mod}, {fix}")
        if entry == "train.py" and cuda0 and not cuda:
            if env.get("SLURM_JOB_ID"):
                notes.append(f"{name}'s training runs on cuda:0: its SLURM training tasks need a GPU (--slurm_gpus)")
            else:
                errors.append(f"{name}'s training needs a GPU (its scripts run on cuda:0) and none is visible here: "
                              f"run on a GPU machine, {fix}")
    if not cuda and _generation_reads_gpu(scripts / "algo.py"):
        errors.insert(0, f"{name}'s generation needs a GPU (scripts/algo.py sizes the bundle from GPU memory) and none "
                         f"is visible here: run on a GPU machine, {fix}")
    return errors, notes

def check_templates(templates: str, algos: Sequence[str]) -> None:
    """Refuse, naming what exists, a local templates folder that is missing or lacks one of ``algos``.

    URLs are left to MONAI's BundleGen (which downloads them).
    """
    if "://" in templates:
        return
    folder = Path(templates)
    if not folder.is_dir():
        what = "a file, not a folder" if folder.exists() else "no such folder"
        raise ValueError(f"--templates {templates}: {what}. Give a folder whose subfolders hold "
                         "scripts/algo.py (MONAI's layout), or leave --templates out for the project's own")
    available = sorted(p.parent.parent.name for p in folder.glob("*/scripts/algo.py"))
    unknown = [a for a in algos if a not in available]
    if unknown:
        raise ValueError(f"--algos {' '.join(unknown)}: no such template in {templates} (it has: "
                         f"{', '.join(available) or 'no folder with scripts/algo.py'}); choose among those")


def template_import_error(exc: BaseException, template_src: str) -> str:
    """One line for a template whose ``scripts/algo.py`` MONAI could not import or build: the
    file, the error and its line, and the fix (the copy under ``algorithm_templates`` is
    made again from the template on the next run)."""
    import pydoc

    cause, seen = exc, set()
    while cause is not None and not isinstance(cause, pydoc.ErrorDuringImport) and id(cause) not in seen:
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, pydoc.ErrorDuringImport):
        copy = str(cause.filename)
        rel = copy.split("algorithm_templates/", 1)[-1]
        return (f"templates {template_src}: {rel} does not import ({cause.exc.__name__}: {cause.value}): fix it in "
                f"the template (the copy that failed is {copy}), then run --mode generate again")
    return (f"templates {template_src}: MONAI could not build its algorithms ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}); check each <algo>/scripts/algo.py "
            "there (MONAI's layout: its Algo class, configs/, scripts/)")
