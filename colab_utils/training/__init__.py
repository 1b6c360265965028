"""Training: fit and resume (:mod:`.fit`), restarts after a collapse (:mod:`.attempts`),
callbacks, checkpoints, the collapse check (:mod:`.health`) and the run directory
(:mod:`.rundir`)."""
