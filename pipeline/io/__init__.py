"""Connectors, one module per source or sink (as Beam keeps apache_beam/io), and the building blocks
they share (the output folder, windowed files, progress of a streaming run, drain). A connector
takes its config section whole; stages choose and wire connectors; no connector imports a stage."""
