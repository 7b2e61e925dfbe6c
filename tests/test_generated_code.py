"""The checked-in generated code must be exactly what `python protos/generate.py` produces from the .proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
GENERATED = REPO_ROOT / "dbmaint" / "v1"


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(REPO_ROOT / "protos" / "generate.py"), "--out", str(tmp_path)], check=True)
    fresh = {
        p.relative_to(tmp_path / "dbmaint" / "v1"): p.read_bytes() for p in (tmp_path / "dbmaint" / "v1").iterdir()
    }
    assert fresh, "protoc produced nothing"
    for name, content in fresh.items():
        checked_in = GENERATED / name
        assert checked_in.exists(), f"{checked_in} is missing: run `python protos/generate.py`"
        assert checked_in.read_bytes() == content, (
            f"{checked_in} drifted from the .proto: run `python protos/generate.py`"
        )
    stale = (
        {p.name for p in GENERATED.iterdir() if p.suffix in {".py", ".pyi", ".binpb"}}
        - {str(n) for n in fresh}
        - {"__init__.py"}
    )
    assert not stale, f"generated files with no .proto behind them: {stale}"


def test_every_proto_element_is_commented() -> None:
    """grpcurl describe shows these comments; an undocumented field is a bug in the API."""
    from google.protobuf import descriptor_pb2

    from dbmaint.descriptors import commented_file_protos

    for raw in commented_file_protos().values():
        file = descriptor_pb2.FileDescriptorProto.FromString(raw)
        commented = {tuple(loc.path) for loc in file.source_code_info.location if loc.leading_comments.strip()}
        missing = []
        for m_index, message in enumerate(file.message_type):
            if (4, m_index) not in commented:
                missing.append(message.name)
            for f_index, field in enumerate(message.field):
                if (4, m_index, 2, f_index) not in commented:
                    missing.append(f"{message.name}.{field.name}")
        for e_index, enum in enumerate(file.enum_type):
            if (5, e_index) not in commented:
                missing.append(enum.name)
            for v_index, value in enumerate(enum.value):
                if (5, e_index, 2, v_index) not in commented:
                    missing.append(value.name)
        for s_index, service in enumerate(file.service):
            if (6, s_index) not in commented:
                missing.append(service.name)
            for r_index, method in enumerate(service.method):
                if (6, s_index, 2, r_index) not in commented:
                    missing.append(f"{service.name}.{method.name}")
        assert not missing, f"{file.name}: undocumented: {missing}"
