"""An nnU-Net v2 trainer that trains for a wall-clock budget, for ``bench/compare_nnunet.py``.

This file is not imported by the project: ``compare_nnunet.py --setup`` copies it into the
separate nnU-Net environment, inside ``nnunetv2/training/nnUNetTrainer/`` (where
``nnUNetv2_train -tr nnUNetTrainerBudget`` finds trainers by class name), and the comparison
uses it through nnU-Net's console commands only.

It is nnU-Net's default trainer (same network, loss, augmentation, sampling, optimiser and
poly learning-rate schedule) with four changes, all read from the environment:

* ``NNUNET_BUDGET_MINUTES`` (default 10): the training loop stops when this much wall-clock
  time has passed (the clock is read before every training iteration, so the last epoch may
  be cut short); as our pipeline's ``--budget 10m`` does, the number of epochs is also fitted
  to the budget after the first epoch (``floor(budget / first epoch)``), and the poly schedule
  is stretched to that number, so the learning rate anneals inside the budget rather than
  being cut off early in a 1000-epoch schedule;
* fewer iterations per epoch than nnU-Net's 250 training and 50 validation ones, so that
  epochs end often on a CPU: after the second training iteration (the first carries the
  loaders' warm-up) an epoch is sized to about a twentieth of the budget, between 4 and
  ``NNUNET_BUDGET_ITERATIONS`` (default 50) training iterations, with a fifth as many
  validation iterations (1 to ``NNUNET_BUDGET_VAL_ITERATIONS``, default 10);
* ``NNUNET_BUDGET_THREADS``: torch threads (``nnUNetv2_train -device cpu`` sets as many as
  the machine has cores);
* the final validation of the fold (sliding-window prediction of every validation case after
  training) is skipped unless ``NNUNET_BUDGET_FINAL_VALIDATION=1``: the comparison scores
  held-out data instead.

The final checkpoint (``checkpoint_final.pth``) is written when the loop stops, as usual. The
log gets ``budget trainer:`` lines: at the start, when the epoch is sized and the epochs are
planned, after each epoch (training iterations done), and at the end (epochs, iterations,
seconds).
"""

from __future__ import annotations

import os
import time

import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


def _env_number(name: str, default: float) -> float:
    """A positive number from the environment, or ``default`` when the variable is unset.

    Parameters
    ----------
    name : str
        Environment variable.
    default : float
        Value when it is unset or empty.

    Returns
    -------
    float
        The value.
    """
    text = os.environ.get(name, "").strip()
    value = float(text) if text else float(default)
    if value <= 0:
        raise ValueError(f"{name}={text!r}: must be positive")
    return value


class nnUNetTrainerBudget(nnUNetTrainer):
    """nnU-Net's default trainer, trained for a wall-clock budget (see the module docstring).

    Parameters
    ----------
    plans, configuration, fold, dataset_json, device
        As for ``nnUNetTrainer``.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.budget_seconds = 60.0 * _env_number("NNUNET_BUDGET_MINUTES", 10)
        self.max_iterations_per_epoch = int(_env_number("NNUNET_BUDGET_ITERATIONS", 50))
        self.max_val_iterations_per_epoch = int(_env_number("NNUNET_BUDGET_VAL_ITERATIONS", 10))
        self.num_iterations_per_epoch = self.max_iterations_per_epoch
        self.num_val_iterations_per_epoch = self.max_val_iterations_per_epoch
        if os.environ.get("NNUNET_BUDGET_THREADS", "").strip():
            torch.set_num_threads(int(_env_number("NNUNET_BUDGET_THREADS", 1)))

    def perform_actual_validation(self, save_probabilities: bool = False):
        """Skip the final validation of the fold unless ``NNUNET_BUDGET_FINAL_VALIDATION=1``."""
        if os.environ.get("NNUNET_BUDGET_FINAL_VALIDATION", "0") == "1":
            return super().perform_actual_validation(save_probabilities)
        self.print_to_log_file("budget trainer: final validation of the fold skipped "
                               "(NNUNET_BUDGET_FINAL_VALIDATION=1 runs it)")
        return None

    def _size_epochs(self, seconds_per_iteration: float) -> None:
        """Iterations per epoch from the time of one iteration: about 20 epochs in the budget, 4 to the cap."""
        fit = int(self.budget_seconds / (20 * max(seconds_per_iteration, 1e-6)))
        self.num_iterations_per_epoch = max(4, min(self.max_iterations_per_epoch, fit))
        self.num_val_iterations_per_epoch = max(1, min(self.max_val_iterations_per_epoch,
                                                       self.num_iterations_per_epoch // 5))
        self.print_to_log_file(
            f"budget trainer: one iteration {seconds_per_iteration:.2f} s: {self.num_iterations_per_epoch} training + "
            f"{self.num_val_iterations_per_epoch} validation iterations per epoch")

    def _one_epoch(self, deadline: float, first: bool) -> tuple[int, bool]:
        """One epoch through nnU-Net's own hooks; training iterations stop at ``deadline``.

        Returns
        -------
        tuple of (int, bool)
            Training iterations done, and whether the deadline cut the epoch short.
        """
        self.on_epoch_start()
        self.on_train_epoch_start()
        outputs: list = []
        cut = False
        while len(outputs) < self.num_iterations_per_epoch:
            if outputs and time.time() >= deadline:
                cut = True
                break
            t0 = time.time()
            outputs.append(self.train_step(next(self.dataloader_train)))
            if first and len(outputs) == 2:  # the first iteration carries the loaders' warm-up
                self._size_epochs(time.time() - t0)
        self.on_train_epoch_end(outputs)
        with torch.no_grad():
            self.on_validation_epoch_start()
            val = [self.validation_step(next(self.dataloader_val)) for _ in range(self.num_val_iterations_per_epoch)]
            self.on_validation_epoch_end(val)
        return len(outputs), cut

    def run_training(self):
        """Train until the planned epochs are done or the budget has passed, then save as usual."""
        self.on_train_start()
        self.print_to_log_file(
            f"budget trainer: {self.budget_seconds / 60:g} min, at most {self.num_iterations_per_epoch} training + "
            f"{self.num_val_iterations_per_epoch} validation iterations per epoch, batch size {self.batch_size}, "
            f"torch threads {torch.get_num_threads()}, device {self.device}")
        start = time.time()
        deadline = start + self.budget_seconds
        iterations, stop = 0, "planned epochs done"
        while self.current_epoch < self.num_epochs:
            t0 = time.time()
            done, cut = self._one_epoch(deadline, first=self.current_epoch == 0)
            iterations += done
            if self.current_epoch == 0:
                first = time.time() - t0
                epochs = max(1, min(self.num_epochs, int(self.budget_seconds // max(first, 1e-6))))
                self.num_epochs = epochs
                self.lr_scheduler.max_steps = epochs  # the poly schedule now ends with the budget
                self.print_to_log_file(f"budget trainer: first epoch {first:.1f} s: {epochs} epochs planned")
            self.print_to_log_file(f"budget trainer: epoch {self.current_epoch}: {done} training iterations"
                                   + (" (cut short by the budget)" if cut else ""))
            self.on_epoch_end()  # nnU-Net's checkpoints and log; advances current_epoch
            if cut or (time.time() >= deadline and self.current_epoch < self.num_epochs):
                stop = "wall-clock budget reached" + (", last epoch cut short" if cut else "")
                break
        seconds = time.time() - start
        self.print_to_log_file(
            f"budget trainer: done ({stop}): {self.current_epoch} epochs, {iterations} iterations in {seconds:.1f} s "
            f"({iterations / max(seconds, 1e-6):.3f} it/s, validation iterations included in the time)")
        self.on_train_end()
