"""The engine every bundle runs, for 3-D crops and 2-D cells alike: networks, masked losses,
transforms, input checks, the training loop with its checkpoints, budget and report, and
sliding-window inference."""
