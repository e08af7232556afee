"""Regenerate the Python code for the API from `protos/` — the one command for it:

    python -m ledger.api.codegen            # rewrite ledger/v1/
    python -m ledger.api.codegen --check    # exit 1 if ledger/v1/ is not what protos/ give

The generated modules live in `ledger/v1/`, the Python package that mirrors the proto package
`ledger.v1`: protoc writes imports as `from ledger.v1 import ...`, so generating into the
matching package needs no import rewriting. Nothing hand-written lives there; ruff skips it
and mypy reads its `.pyi` stubs (mypy-protobuf, typed gRPC stubs included).

The output depends on the exact generator versions, which the dev extra pins (grpcio-tools,
mypy-protobuf), so regenerating on another machine gives identical bytes; a test checks it.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
THIRD_PARTY = ROOT / "third_party" / "googleapis"
PACKAGE = Path("ledger") / "v1"
INIT = '''"""Generated from protos/ledger/v1 by `python -m ledger.api.codegen`. Do not edit."""
'''


def proto_files() -> list[Path]:
    return sorted((PROTOS / PACKAGE).glob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Write the generated package under `out_root` (as `ledger/v1/...`); returns its files."""
    from grpc_tools import protoc  # dev-only dependency: imported when generating

    well_known = Path(protoc.__file__).parent / "_proto"
    plugins = Path(sys.executable).parent
    target = out_root / PACKAGE
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    out = str(out_root)
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTOS}",
        f"--proto_path={THIRD_PARTY}",
        f"--proto_path={well_known}",
        f"--plugin=protoc-gen-mypy={plugins / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugins / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *(str(p.relative_to(PROTOS)) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (target / "__init__.py").write_text(INIT, encoding="utf-8")
    return sorted(target.iterdir())


def differences(generated: Path, committed: Path) -> list[str]:
    """File names that differ between two generated package folders."""
    names = {p.name for p in generated.iterdir()} | {
        p.name for p in committed.iterdir() if p.is_file()
    }
    return sorted(
        name
        for name in names
        if not (generated / name).is_file()
        or not (committed / name).is_file()
        or not filecmp.cmp(generated / name, committed / name, shallow=False)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ledger.api.codegen", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="only compare; exit 1 if ledger/v1 is stale"
    )
    args = parser.parse_args(argv)
    if not args.check:
        files = generate(ROOT)
        print(f"generated {len(files)} files in {PACKAGE}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = differences(Path(tmp) / PACKAGE, ROOT / PACKAGE)
    if stale:
        print(f"{PACKAGE} is stale, run `python -m ledger.api.codegen`: {', '.join(stale)}")
        return 1
    print(f"{PACKAGE} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
