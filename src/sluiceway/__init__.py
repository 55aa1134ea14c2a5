"""Sluiceway: streaming to clients over HTTP."""
