"""The job's version, stamped on every dead letter; setup.py reads it from here."""

PIPELINE_VERSION = "0.1.0"
