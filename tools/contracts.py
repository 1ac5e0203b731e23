"""Generate, check and release the protobuf contracts under contracts/.

    python -m tools.contracts generate   # regenerate contracts/**/*_pb2.py(i) from the .proto files
    python -m tools.contracts check      # fail if regenerating would change a committed file
    python -m tools.contracts image OUT  # write the descriptor set (with imports) of the contracts
    python -m tools.contracts release    # (re)write the released descriptor set of this version

The .proto files import buf/validate/validate.proto. The protovalidate wheel ships that file only
as a serialized descriptor inside its generated module, so it is read from there and handed to
protoc with --descriptor_set_in; contracts/buf/validate/validate_pb2.py is generated from it so
that the google.protobuf runtime knows the rule extensions.

Generated modules are rewritten to import each other through the `contracts` package
(`from contracts.riskpipe.v1 import transaction_pb2`), so the project root is the only path needed.
"""

from __future__ import annotations

import argparse
import ast
import filecmp
import importlib.util
import pathlib
import re
import sys
import tempfile

from google.protobuf import descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONTRACTS = ROOT / "contracts"
VALIDATE_PROTO = "buf/validate/validate.proto"
RELEASED = CONTRACTS / "released" / "riskpipe.v1.binpb"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi")
_IMPORT_FIX = re.compile(r"^from (riskpipe\.v1|buf\.validate) import ", re.MULTILINE)
_MODULE_NAME_FIX = re.compile(r"'((?:riskpipe\.v1|buf\.validate)\.\w+_pb2)'")


def _validate_descriptor_bytes() -> bytes:
    """The serialized FileDescriptorProto of buf/validate/validate.proto, from protovalidate."""
    spec = importlib.util.find_spec("protovalidate")
    if spec is None or spec.origin is None:
        raise SystemExit("protovalidate is not installed")
    module_path = pathlib.Path(spec.origin).parent / "_gen" / "buf" / "validate" / "validate_pb.py"
    tree = ast.parse(module_path.read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "file_desc"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, bytes)
        ):
            return node.args[0].value
    raise SystemExit(f"no file descriptor found in {module_path}")


def _dependency_set(out: pathlib.Path) -> pathlib.Path:
    files = descriptor_pb2.FileDescriptorSet()
    for module in (descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2):
        files.file.add().MergeFromString(module.DESCRIPTOR.serialized_pb)
    files.file.add().MergeFromString(_validate_descriptor_bytes())
    out.write_bytes(files.SerializeToString(deterministic=True))
    return out


def proto_files(contracts_dir: pathlib.Path) -> list[str]:
    return sorted(p.relative_to(contracts_dir).as_posix() for p in contracts_dir.glob("riskpipe/v1/*.proto"))


def _protoc(contracts_dir: pathlib.Path, args: list[str]) -> None:
    """protoc over contracts_dir, with validate.proto and the well-known types as descriptors."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        deps = _dependency_set(pathlib.Path(tmp) / "deps.binpb")
        full = [f"--descriptor_set_in={deps}", f"-I{contracts_dir}", *args]
        code = protoc.main(["protoc", *full])
    if code != 0:
        raise SystemExit(f"protoc failed ({code}): {' '.join(full)}")


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Generate the Python modules into out_dir (laid out like contracts/) and return them."""
    _protoc(
        CONTRACTS,
        [f"--python_out={out_dir}", f"--pyi_out={out_dir}", VALIDATE_PROTO, *proto_files(CONTRACTS)],
    )
    # protoc's stub for validate.proto is not valid Python typing (a field named `bool`); the
    # module itself is enough for the runtime, and type checkers treat it as untyped.
    (out_dir / "buf" / "validate" / "validate_pb2.pyi").unlink()
    written = sorted(p for p in out_dir.rglob("*") if p.name.endswith(GENERATED_SUFFIXES))
    for path in written:
        text = _IMPORT_FIX.sub(lambda m: f"from contracts.{m.group(1)} import ", path.read_text())
        # The module name the message classes are built under: pickling finds classes by it.
        text = _MODULE_NAME_FIX.sub(lambda m: f"'contracts.{m.group(1)}'", text)
        path.write_text(text)
    return written


def image(out: pathlib.Path, contracts_dir: pathlib.Path = CONTRACTS) -> pathlib.Path:
    """Descriptor set of the contracts with all imports: the input of buf lint and buf breaking."""
    _protoc(
        contracts_dir,
        ["--include_imports", "--include_source_info", f"--descriptor_set_out={out}", *proto_files(contracts_dir)],
    )
    return out


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = pathlib.Path(tmp)
        fresh = generate(tmp_dir)
        drift = []
        for path in fresh:
            committed = CONTRACTS / path.relative_to(tmp_dir)
            if not committed.exists() or not filecmp.cmp(path, committed, shallow=False):
                drift.append(committed.relative_to(ROOT).as_posix())
        expected = {CONTRACTS / p.relative_to(tmp_dir) for p in fresh}
        for committed in CONTRACTS.rglob("*"):
            if committed.name.endswith(GENERATED_SUFFIXES) and committed not in expected:
                drift.append(committed.relative_to(ROOT).as_posix() + " (no .proto generates it)")
    if drift:
        print(
            "generated contract code differs from the .proto files; run "
            "`python -m tools.contracts generate` and commit:",
            *drift,
            sep="\n  ",
        )
        return 1
    print(f"contracts: {len(fresh)} generated files match {len(proto_files(CONTRACTS))} .proto files")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("generate")
    sub.add_parser("check")
    sub.add_parser("release")
    image_parser = sub.add_parser("image")
    image_parser.add_argument("out", type=pathlib.Path)
    args = parser.parse_args(argv)
    if args.command == "generate":
        for path in generate(CONTRACTS):
            print(path.relative_to(ROOT))
        return 0
    if args.command == "check":
        return check()
    if args.command == "image":
        image(args.out)
        return 0
    RELEASED.parent.mkdir(parents=True, exist_ok=True)
    image(RELEASED)
    print(RELEASED.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
