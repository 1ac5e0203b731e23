"""Packages the scoring job: `pip install -e .` locally, `--setup_file ./setup.py` for remote workers.

Versions are pinned in requirements.lock (used as a constraints file by the scripts); the ranges
here are what the code needs.
"""

import pathlib
import re

import setuptools

VERSION = re.search(
    r'PIPELINE_VERSION = "([^"]+)"',
    (pathlib.Path(__file__).parent / "pipeline" / "shared" / "version.py").read_text(),
).group(1)

setuptools.setup(
    name="riskpipe",
    version=VERSION,
    description="Card-transaction fraud scoring on Apache Beam",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=["pipeline", "pipeline.*", "contracts", "contracts.*", "tools", "bench"]),
    package_data={"pipeline.shared": ["reference/*.csv"]},
    include_package_data=True,
    install_requires=[
        "apache-beam==2.77.0",
        "protobuf>=6.31,<7",
        "protovalidate==2.1.0",
        "onnxruntime>=1.20,<2",
        "onnx>=1.17,<2",
        # The trees of the model in LightGBM's format give each decision its reasons (TreeSHAP).
        "lightgbm>=4.5,<5",
        # The same contributions from per-leaf tables, compiled (pipeline.shared.tree_shap).
        "numba>=0.61,<1",
        "numpy>=2,<3",
        "orjson>=3.10,<4",
        "pyarrow>=16",
        "PyYAML>=6,<7",
        # Typed config sections (pipeline.config).
        "pydantic>=2.7,<3",
        "confluent-kafka>=2.6,<3",
        # The PostgreSQL profile store (enrich.backend postgres); the wheel bundles libpq.
        "psycopg[binary]>=3.2,<4",
        # Metrics for monitoring (--metrics_port) and the run report (report.html, charts inlined).
        "prometheus-client>=0.20,<1",
        "plotly>=5.20,<8",
    ],
    extras_require={
        "train": ["scikit-learn>=1.6,<2", "skl2onnx>=1.18,<2", "onnxmltools>=1.13,<2"],
        # Dataflow and Pub/Sub (Beam's Google Cloud I/O and the Dataflow runner's client).
        "dataflow": ["apache-beam[gcp]==2.77.0"],
        "dev": [
            "apache-beam[gcp]==2.77.0",
            "scikit-learn>=1.6,<2",
            "skl2onnx>=1.18,<2",
            "onnxmltools>=1.13,<2",
            "grpcio-tools>=1.70,<1.82",
            "pytest>=8",
            "ruff>=0.8",
            "import-linter>=2.1",
            "mypy>=1.10",
            "types-PyYAML",
            "pycountry>=24",
            "iso4217>=1.11",
            "hypothesis>=6.100",
            # The run report's browser test drives Debian's Chromium (scripts/chromium.sh).
            "playwright>=1.45,<2",
        ],
    },
)
