"""Running the bundles: the work_dir layout, launching training (one process, torchrun),
locks that keep two runs off one bundle, and the SLURM job chain."""
