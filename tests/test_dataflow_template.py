"""The Dataflow Flex Template's files and the job's package for remote workers.

No Docker daemon and no Dataflow here: the image is not built. What is checked instead:
- metadata.json is what the job's own options give (tools.template_metadata), and each of its
  parameters is an option the job accepts;
- the Dockerfile serves as launcher and worker, pins the job's Python and Beam, installs everything
  at build time, and copies files that exist; the launcher's entry point builds the Dataflow job;
- the wheel setup.py builds (what --setup_file ships) holds every stage, the generated contracts and
  the reference CSVs;
- model and reference files are read through Beam's file systems, as gs:// parameters are.
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import zipfile

import apache_beam as beam
import apache_beam.version
import pytest
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.localfilesystem import LocalFileSystem

from pipeline import config as job_config
from pipeline import options as job_options
from pipeline import runner
from pipeline.stages import STAGES
from tests.conftest import AS_OF, ROOT
from tests.helpers import read_jsonl
from tools import template_metadata

DOCKERFILE = ROOT / "deploy" / "dataflow" / "Dockerfile"
MAIN = ROOT / "deploy" / "dataflow" / "main.py"
SAMPLE_VALUES = {"int": "7", "float": "2.5", "bool": "true", "timestamp": "2026-11-15T00:00:00Z"}
# What the launcher passes: template parameters and Dataflow's own options.
LAUNCH_PARAMETERS = [
    "--input=gs://riskpipe-test/transactions/*.jsonl",
    "--output_dir=gs://riskpipe-test/runs/1",
    f"--as_of={AS_OF.isoformat()}",
    "--project=riskpipe-test",
    "--region=europe-west1",
    "--temp_location=gs://riskpipe-test/tmp",
    "--sdk_container_image=europe-docker.pkg.dev/riskpipe-test/riskpipe/riskpipe:1",
    "--sdk_location=container",
    "--dry_run=true",
]
SAMPLE_BY_KEY = {
    "pubsub.subscription": "projects/riskpipe-test/subscriptions/transactions",
    "pubsub.alerts_topic": "projects/riskpipe-test/topics/alerts",
    "bigquery.scored_table": "riskpipe-test:fraud.scored",
    "bigquery.dead_letter_table": "fraud.dead_letters",
}


def test_metadata_json_is_what_the_jobs_options_give():
    done = subprocess.run(
        [sys.executable, "-m", "tools.template_metadata", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    on_file = json.loads(template_metadata.METADATA.read_text())
    names = [p["name"] for p in on_file["parameters"]]
    assert names == ["config", *(s.option for s in job_config.settings())]
    assert len(names) == len(set(names))
    for p in on_file["parameters"]:
        assert set(p) <= {"name", "label", "helpText", "isOptional", "regexes"} and p["helpText"] and p["label"]


def test_every_template_parameter_is_an_option_the_job_accepts():
    settings = {s.option: s for s in job_config.settings()}
    for p in json.loads(template_metadata.METADATA.read_text())["parameters"]:
        setting = settings.get(p["name"])
        value = "x"
        if setting is not None and setting.kind == "choice":
            value = setting.choices[-1]
        elif setting is not None:
            value = SAMPLE_BY_KEY.get(setting.key, SAMPLE_VALUES.get(setting.kind, value))
        for regex in p.get("regexes", []):
            assert re.fullmatch(regex, value), (p["name"], value)
        options = job_options.parse_options([f"--{p['name']}={value}"])  # an unknown one is refused
        assert options.get_all_options()[p["name"]] == value


def test_a_stale_metadata_file_fails_the_check(tmp_path, monkeypatch):
    stale = json.loads(template_metadata.METADATA.read_text())
    stale["parameters"] = stale["parameters"][:-1]  # an option the template lacks
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(stale, indent=2) + "\n")
    monkeypatch.setattr(template_metadata, "METADATA", path)
    assert template_metadata.main(["--check"]) == 1
    assert template_metadata.main([]) == 0 and template_metadata.main(["--check"]) == 0


def dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_dockerfile_is_launcher_and_worker_with_everything_installed_at_build_time():
    lines = dockerfile()
    beam_version = apache_beam.version.__version__
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert lines[0] == f"FROM python:{python}-slim"
    assert f"COPY --from=apache/beam_python{python}_sdk:{beam_version} /opt/apache/beam /opt/apache/beam" in lines
    launcher = [line for line in lines if "python_template_launcher" in line and line.startswith("COPY --from=")]
    assert launcher and f"python{python.replace('.', '')}-template-launcher-base" in launcher[0]
    assert lines[-1] == 'ENTRYPOINT ["/opt/apache/beam/boot"]'
    env = " ".join(line for line in lines if line.startswith("ENV "))
    assert 'FLEX_TEMPLATE_PYTHON_PY_FILE="${WORKDIR}/deploy/dataflow/main.py"' in env
    # No requirements or setup file for the launcher: it would pip-install them at every launch.
    assert "FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE" not in env and "FLEX_TEMPLATE_PYTHON_SETUP_FILE" not in env
    assert "PIP_NO_DEPS=True" in env
    installs = [line for line in lines if line.startswith("RUN pip install")]
    assert installs and all("-c requirements.lock" in line for line in installs)
    assert f"apache-beam[gcp]=={beam_version}" in (ROOT / "setup.py").read_text()  # the [dataflow] extra
    ignored = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    for line in lines:
        if line.startswith("COPY ") and "--from=" not in line:
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
                assert source.split("/")[0] not in ignored, f"{source} is excluded by .dockerignore"


def test_the_images_files_installed_as_the_dockerfile_does_launch_the_template(tmp_path):
    """Without Docker: the files the Dockerfile copies, installed by its own pip commands into a
    fresh Python, then its entry point run as the launcher runs it, with nothing else on the path."""
    lines = dockerfile()
    template = tmp_path / "template"
    for line in lines:
        if line.startswith("COPY ") and "--from=" not in line:
            *sources, target = line.split()[1:]
            for source in sources:  # into a folder (./) under its own name, else to the target
                destination = template / (pathlib.Path(source).name if target in ("./", ".") else target)
                destination.parent.mkdir(parents=True, exist_ok=True)
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, destination)
                else:
                    shutil.copy2(ROOT / source, destination)
    shutil.rmtree(template / "pipeline" / "__pycache__", ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    for line in lines:
        if line.startswith("RUN pip install"):
            for command in line[len("RUN ") :].split(" && "):
                argv = [python, "-m", *[a.strip('"') for a in command.split()]]
                done = subprocess.run(argv, cwd=template, capture_output=True, text=True, timeout=900)
                assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_NO_DEPS"] = "True"
    launched = subprocess.run(
        [python, str(template / "deploy" / "dataflow" / "main.py"), *LAUNCH_PARAMETERS],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "to DataflowRunner" in launched.stdout and "nothing submitted" in launched.stdout
    where = subprocess.run(
        [python, "-c", "import pipeline.runner; print(pipeline.runner.__file__)"],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "site-packages" in where  # the installed job, not the repository


def test_the_launchers_entry_point_builds_the_dataflow_job(tmp_path):
    """deploy/dataflow/main.py with template parameters, as the launcher runs it, up to submission."""
    done = subprocess.run(
        [sys.executable, str(MAIN), *LAUNCH_PARAMETERS],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "batch job" in done.stdout and "to DataflowRunner" in done.stdout and "nothing submitted" in done.stdout
    assert "scored -> gs://riskpipe-test/runs/1/scored/" in done.stdout


def test_the_wheel_for_remote_workers_holds_the_whole_job(tmp_path):
    source = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in tracked.splitlines():
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = glob.glob(str(tmp_path / "riskpipe-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for stage in STAGES:
        assert f"pipeline/stages/s{stage}.py" in names, stage
    for proto in glob.glob(str(ROOT / "contracts" / "riskpipe" / "v1" / "*.proto")):
        assert f"contracts/riskpipe/v1/{pathlib.Path(proto).stem}_pb2.py" in names, proto
    assert "contracts/buf/validate/validate_pb2.py" in names
    for csv in glob.glob(str(ROOT / "pipeline" / "shared" / "reference" / "*.csv")):
        assert f"pipeline/shared/reference/{pathlib.Path(csv).name}" in names, csv
    assert "pipeline/runner.py" in names and "pipeline/graph.py" in names and "pipeline/io/kafka.py" in names
    assert "pipeline/config/sections.py" in names and "pipeline/local/prism.py" in names


class RemoteTestFileSystem(LocalFileSystem):
    """A file system under the scheme remotetest:// over a local folder: a stand-in for gs://,
    reached only through Beam's FileSystems, as the job reaches gs:// on Dataflow."""

    ROOT_DIR = "/"

    @classmethod
    def scheme(cls):
        return "remotetest"

    def _local(self, path: str) -> str:
        return os.path.join(self.ROOT_DIR, path[len("remotetest://") :])

    def _remote(self, path: str) -> str:
        return "remotetest://" + os.path.relpath(path, self.ROOT_DIR)

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *paths])

    def split(self, path):
        head, _, tail = path.rpartition("/")
        return head, tail

    def _list(self, dir_or_prefix):
        for found in super()._list(self._local(dir_or_prefix)):
            yield FileMetadata(self._remote(found.path), found.size_in_bytes, found.last_updated_in_seconds)

    def open(self, path, *args, **kwargs):
        return super().open(self._local(path), *args, **kwargs)

    def exists(self, path):
        return os.path.exists(self._local(path))

    def size(self, path):
        return os.path.getsize(self._local(path))

    def last_updated(self, path):
        return os.path.getmtime(self._local(path))

    def checksum(self, path):
        return str(self.size(path))

    def metadata(self, path):
        if not self.exists(path):
            raise FileNotFoundError(path)
        return FileMetadata(path, self.size(path), self.last_updated(path))


@pytest.fixture
def remote_files(tmp_path):
    RemoteTestFileSystem.ROOT_DIR = str(tmp_path)
    for name in ("data/sample", "models/fraud-gbm-v2"):
        shutil.copytree(ROOT / name, tmp_path / name)
    yield "remotetest://"
    RemoteTestFileSystem.ROOT_DIR = "/"


def test_model_input_and_reference_files_are_read_through_beams_file_systems(remote_files, tmp_path):
    assert beam.io.filesystems.FileSystems.get_filesystem("remotetest://x").scheme() == "remotetest"
    common = ["--config", str(ROOT / "config.yaml"), "--as_of", AS_OF.isoformat()]
    remote = runner.run(
        [
            *common,
            f"--input={remote_files}data/sample/transactions.jsonl",
            f"--customers={remote_files}data/sample/customers.jsonl",
            f"--merchants={remote_files}data/sample/merchants.jsonl",
            f"--model={remote_files}models/fraud-gbm-v2/model.onnx",
            f"--output_dir={tmp_path / 'remote-out'}",
        ]
    )
    local = runner.run([*common, f"--output_dir={tmp_path / 'local-out'}"])
    assert remote["balanced"] and remote["read"] == local["read"] == 10_000
    for key in ("scored", "dead_letters", "dead_letters_by_code", "default_profiles_used"):
        assert remote[key] == local[key], key
    assert remote["model_version"] == local["model_version"]  # the model card read remotely too
    for sub in ("scored", "dead_letters"):
        lines = [read_jsonl(tmp_path / out / sub) for out in ("remote-out", "local-out")]
        # Records name the file they came from: the same file, under the other scheme.
        assert sorted(line.replace(remote_files, f"{ROOT}/") for line in lines[0]) == lines[1], sub


def test_a_damaged_remote_model_stops_the_job_before_it_reads(remote_files, tmp_path):
    broken = tmp_path / "models" / "broken"
    broken.mkdir(parents=True)
    (broken / "model.onnx").write_bytes((ROOT / "models/fraud-gbm-v2/model.onnx").read_bytes()[:4000])
    with pytest.raises(job_config.ConfigError, match="cannot be loaded"):
        runner.run(
            [
                "--config",
                str(ROOT / "config.yaml"),
                f"--model={remote_files}models/broken/model.onnx",
                f"--output_dir={tmp_path / 'out'}",
            ]
        )
    assert not (tmp_path / "out").exists()
