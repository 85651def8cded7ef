"""Distillation methods (BPTT, DM, GM, TM) and import/export of others' distilled sets."""
