"""The card-transaction fraud-scoring job (Apache Beam, Pipeline Architecture).

Stages live in pipeline/stages/ as numbered files; pipeline/runner.py composes them.
"""
