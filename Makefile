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
DEMO_TRAIN ?= --override num_workers=0 --override segresnet:network\#init_filters=16 \
              --override dints:network\#num_blocks=3 --override swinunetr:network\#feature_size=12

.PHONY: venv test demo clean bench help

help:
	@echo "make demo   set up .venv, generate the built-in synthetic CellMap data and run the pipeline"
	@echo "            (convert, analyze, generate, train 3 networks x 2 folds, ensemble, submission, local"
	@echo "            score; a few CPU minutes)"
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
	$(PY) -m converters.synthetic --out $(DEMO_DIR)/synthetic_cellmap --force

demo: venv $(DEMO_DIR)/synthetic_cellmap/cases.json
	$(PY) -m converters.convert_zarr_to_nifti \
	    --datasplit $(DEMO_DIR)/synthetic_cellmap/datasplit.csv \
	    --test_manifest $(DEMO_DIR)/synthetic_cellmap/test_crop_manifest.csv \
	    --output_dir $(DEMO_DIR)/nifti --num_folds 2 --workers $(WORKERS)
	$(PY) run_auto3dseg.py --mode full --datalist $(DEMO_DIR)/nifti/datalist.json \
	    --work_dir $(DEMO_DIR)/work_dir --workers 0 --num_epochs 2 --patch_size 32 $(DEMO_TRAIN) \
	    --truth $(DEMO_DIR)/synthetic_cellmap/test_truth.zarr
	@echo
	@echo "Demo finished."
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

bench: venv
	$(PY) bench/bench_convert.py
	$(PY) bench/bench_training.py
	$(PY) bench/bench_postprocess.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
