from nexplain.codeversion import code_files, code_version


def _package(root):
    pkg = root / "nexplain"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "io.py").write_text("def write():\n    return 1\n")
    (pkg / "data" / "world.py").write_text("from ..io import write\n\ndef gen():\n    return write()\n")
    (pkg / "unrelated.py").write_text("X = 1\n")
    script = root / "script.py"
    script.write_text("from nexplain.data.world import gen\ngen()\n")
    return pkg, script


def test_follows_imports_transitively(tmp_path):
    pkg, script = _package(tmp_path)
    names = [p.relative_to(tmp_path).as_posix() for p in code_files(script, tmp_path)]
    assert names == ["nexplain/__init__.py", "nexplain/data/__init__.py", "nexplain/data/world.py", "nexplain/io.py"]


def test_changes_with_code_not_comments(tmp_path):
    pkg, script = _package(tmp_path)
    v0 = code_version(script, tmp_path)
    (pkg / "io.py").write_text("# a comment\ndef write():\n\n    return 1  # same code\n")
    assert code_version(script, tmp_path) == v0
    (pkg / "unrelated.py").write_text("X = 2\n")
    assert code_version(script, tmp_path) == v0
    (pkg / "io.py").write_text("def write():\n    return 2\n")
    assert code_version(script, tmp_path) != v0
