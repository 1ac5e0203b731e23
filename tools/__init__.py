"""Tooling around the job: data generator, model trainer, contract generation."""
