"""Evaluation: trained methods loaded for inference (:mod:`.inference`), slice scores
(:mod:`.scoring`), whole volumes (:mod:`.volumes`), the comparison of methods
(:mod:`.compare`), its report (:mod:`.report`) and whole-scan synthesis
(:mod:`.synthesis`)."""
