"""Where the computation runs: the mixed-precision policy (:mod:`.precision`) and the
``tf.distribute`` strategy (:mod:`.distribute`)."""
