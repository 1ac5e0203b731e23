"""Generic helpers every stage may use: dead letters, metrics, reference data, features, config."""
