# Two commands on a fresh machine:  make demo  and  make test
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# A CPU build of torch is installed first so that the project's unpinned `torch`
# requirement does not pull several GB of CUDA wheels. Override on a GPU machine:
#   make TORCH_SPEC="torch" demo
TORCH_SPEC ?= torch==2.13.0
DEMO_DIR   ?= demo_output
WORKERS    ?= 2
# CPU-sized networks for the demo (train-time overrides; the bundles' YAML keeps the defaults)
DEMO_TRAIN ?= --override num_workers=0 --override num_iterations_per_epoch=3 \
              --override segresnet:network\#init_filters=16 \
              --override dints:network\#num_blocks=3 --override swinunetr:network\#feature_size=12

# 2-D cells: one small segresnet on the first of 2 folds, trained long enough on a CPU to separate
# touching cells (with 2 folds x 50 epochs in the same time, F1 stayed near 0.14)
DEMO_CELLS ?= --algos segresnet --num_fold 1 --num_epochs 100 --patch_size 96 --override num_workers=0 \
              --override segresnet:network\#init_filters=16 --override num_patches_per_image=8 \
              --override num_epochs_per_validation=50 --override learning_rate=0.002 \
              --override num_iterations_per_epoch=2

.PHONY: venv test demo demo-cellmap demo-cells clean bench help

help:
	@echo "make demo   set up .venv, generate the built-in synthetic CellMap data and 2-D cells, and run the"
	@echo "            pipeline on both (convert, analyze, generate, train, ensemble, submission, local score;"
	@echo "            a few CPU minutes). make demo-cellmap / make demo-cells run one of them."
	@echo "make test   set up .venv and run the test suite"
	@echo "make bench  run the benchmarks in bench/ (slow)"
	@echo "make clean  remove demo output and caches (keeps .venv)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[test]"
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q

$(DEMO_DIR)/synthetic_cellmap/cases.json: | venv
	$(PY) -m converters.cellmap.synthetic --out $(DEMO_DIR)/synthetic_cellmap --force

$(DEMO_DIR)/synthetic_cells/cases.json: | venv
	$(PY) -m converters.cells.synthetic --out $(DEMO_DIR)/synthetic_cells

demo: demo-cellmap demo-cells
	@echo
	@echo "Demo finished: CellMap above, 2-D cells last."

demo-cellmap: venv $(DEMO_DIR)/synthetic_cellmap/cases.json
	$(PY) -m converters.cellmap.convert \
	    --datasplit $(DEMO_DIR)/synthetic_cellmap/datasplit.csv \
	    --test_manifest $(DEMO_DIR)/synthetic_cellmap/test_crop_manifest.csv \
	    --output_dir $(DEMO_DIR)/nifti --num_folds 2 --workers $(WORKERS)
	$(PY) run_auto3dseg.py --mode full --datalist $(DEMO_DIR)/nifti/datalist.json \
	    --work_dir $(DEMO_DIR)/work_dir --workers 0 --num_epochs 2 --patch_size 32 $(DEMO_TRAIN) --oof --tune \
	    --truth $(DEMO_DIR)/synthetic_cellmap/test_truth.zarr
	@echo
	@echo "CellMap demo finished."
	@echo "  built-in CellMap-like data:  $(DEMO_DIR)/synthetic_cellmap (cases: cases.json)"
	@echo "  NIfTI images/labels:         $(DEMO_DIR)/nifti/images, $(DEMO_DIR)/nifti/labels"
	@echo "  datalist:                    $(DEMO_DIR)/nifti/datalist.json"
	@echo "  conversion report:           $(DEMO_DIR)/nifti/conversion_report.md (and .json)"
	@echo "  data statistics:             $(DEMO_DIR)/work_dir/datastats.yaml"
	@echo "  data review (read this):     $(DEMO_DIR)/work_dir/datastats_review.md"
	@echo "  bundles (one per net, fold): $(DEMO_DIR)/work_dir/<algo>_<fold>/ (curves: model/progress.png)"
	@echo "  ensemble probability maps:   $(DEMO_DIR)/work_dir/ensemble_output/ (ensemble.json lists them)"
	@echo "  CellMap submission (zipped): $(DEMO_DIR)/work_dir/submission/submission.zip (report: submission_report.md)"
	@echo "  local score vs test truth:   $(DEMO_DIR)/work_dir/submission/scores.md (and scores.json)"
	@echo "  cross-validated score:       $(DEMO_DIR)/work_dir/cv/scores.md (out-of-fold maps: $(DEMO_DIR)/work_dir/oof/)"
	@echo "  tuned post-processing:       $(DEMO_DIR)/work_dir/postprocess_tuned.yaml (report: tuning/report.md)"

demo-cells: venv $(DEMO_DIR)/synthetic_cells/cases.json
	$(PY) -m converters.cells.convert --images $(DEMO_DIR)/synthetic_cells/images \
	    --labels $(DEMO_DIR)/synthetic_cells/labels --output_dir $(DEMO_DIR)/cells_nifti --num_folds 2 \
	    --workers $(WORKERS) --no_progress
	$(PY) run_auto3dseg.py --mode full --datalist $(DEMO_DIR)/cells_nifti/datalist.json \
	    --work_dir $(DEMO_DIR)/cells_work_dir --workers 0 $(DEMO_CELLS) --oof --tune \
	    --truth $(DEMO_DIR)/synthetic_cells/test_truth
	@echo
	@echo "Cell demo finished."
	@echo "  built-in 2-D cells:          $(DEMO_DIR)/synthetic_cells (cases: cases.json; truth of test images: test_truth/)"
	@echo "  NIfTI images/targets:        $(DEMO_DIR)/cells_nifti (report: conversion_report.md)"
	@echo "  data review (read this):     $(DEMO_DIR)/cells_work_dir/datastats_review.md"
	@echo "  bundle:                      $(DEMO_DIR)/cells_work_dir/segresnet_0/ (curves: model/progress.png)"
	@echo "  <stem>_label.tiff:           $(DEMO_DIR)/cells_work_dir/submission/labels/ (report: submission_report.md)"
	@echo "  cross-validated F1:          $(DEMO_DIR)/cells_work_dir/cv/scores.md (out-of-fold maps: $(DEMO_DIR)/cells_work_dir/oof/)"
	@echo "  tuned post-processing:       $(DEMO_DIR)/cells_work_dir/tuning/report.md"
	@echo "  F1 (official rules):         $(DEMO_DIR)/cells_work_dir/submission/scores.md (and .json, .csv)"

bench: venv
	$(PY) bench/bench_convert.py
	$(PY) bench/bench_training.py
	$(PY) bench/bench_postprocess.py
	$(PY) bench/bench_cells_postprocess.py
	$(PY) bench/bench_cells_wsi.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
