"""Hydra setup and the structured config schema shared by both entry points."""
