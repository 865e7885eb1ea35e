"""Spec loading: line locator, extends, references and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from genesis_build.errors import SpecError
from genesis_build.specs import SpecStore, deep_merge, locate
from genesis_build.stage import Kind


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden_size: int = 8
    layers: int = 2


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    weight: float = 1.0


class M(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arch: Inner = Inner()
    sources: list[Item] = []
    other: str | None = None
    title: str = ""


def store(tmp_path: Path, files: dict[str, str]) -> SpecStore:
    for rel, text in files.items():
        p = tmp_path / "specs" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return SpecStore(tmp_path, {"m": Kind("m", M), "n": Kind("n", M)})


def test_locate_tables_keys_and_arrays() -> None:
    text = 'title = "x"\n\n[arch]\nhidden_size = 8\n\n[[sources]]\nname = "a"\n\n[[sources]]\nname = "b"\nweight = 2\n'
    assert locate(text, ("title",)) == 1
    assert locate(text, ("arch",)) == 3
    assert locate(text, ("arch", "hidden_size")) == 4
    assert locate(text, ("arch", "layers")) == 3  # not written: the enclosing table
    assert locate(text, ("sources", 1, "weight")) == 11
    assert locate(text, ("sources", 0, "name")) == 7


def test_unknown_field_names_file_line_and_suggestion(tmp_path: Path) -> None:
    s = store(tmp_path, {"m/a.toml": "[arch]\nhiden_size = 3\n"})
    with pytest.raises(SpecError) as e:
        s.get("m:a")
    assert str(e.value) == "specs/m/a.toml:2: m.arch.hiden_size: unknown field (did you mean hidden_size?)"


def test_type_error_in_array_of_tables(tmp_path: Path) -> None:
    s = store(tmp_path, {"m/a.toml": '[[sources]]\nname = "x"\n[[sources]]\nname = "y"\nweight = "heavy"\n'})
    with pytest.raises(SpecError) as e:
        s.get("m:a")
    assert str(e.value).startswith("specs/m/a.toml:5: m.sources[1].weight: ")
    assert "'heavy'" in str(e.value)


def test_extends_deep_merges_and_errors_point_to_defining_file(tmp_path: Path) -> None:
    s = store(tmp_path, {
        "m/base.toml": '[arch]\nhidden_size = 16\nlayers = 4\n',
        "m/child.toml": 'extends = "m:base"\n[arch]\nlayers = 6\n',
        "m/bad.toml": 'extends = "m:base"\ntitle = "t"\n[arch]\nlayerz = 1\n',
    })
    child = s.get("m:child").model
    assert (child.arch.hidden_size, child.arch.layers) == (16, 6)
    with pytest.raises(SpecError, match=r"^specs/m/bad.toml:4: m.arch.layerz: unknown field \(did you mean layers\?\)$"):
        s.get("m:bad")


def test_extends_cycle_and_wrong_kind(tmp_path: Path) -> None:
    s = store(tmp_path, {"m/a.toml": 'extends = "m:b"\n', "m/b.toml": 'extends = "m:a"\n', "m/c.toml": 'extends = "n:x"\n'})
    with pytest.raises(SpecError, match="cycle m:a → m:b → m:a"):
        s.get("m:a")
    with pytest.raises(SpecError, match="can only extend a m spec"):
        s.get("m:c")


def test_missing_reference_and_reference_cycle(tmp_path: Path) -> None:
    s = store(tmp_path, {"m/a.toml": 'other = "m:nope"\n', "m/x.toml": 'other = "m:y"\n', "m/y.toml": 'other = "m:x"\n',
                         "m/nope2.toml": ""})
    with pytest.raises(SpecError) as e:
        s.get("m:a")
    assert str(e.value) == "specs/m/a.toml:1: m.other: spec m:nope not found (specs/m/nope.toml does not exist) (did you mean nope2?)"
    with pytest.raises(SpecError, match="reference cycle m:x → m:y → m:x"):
        s.get("m:x")


def test_unknown_kind_bad_toml_and_non_utf8(tmp_path: Path) -> None:
    s = store(tmp_path, {"m/a.toml": 'title = "x"\n[arch\n', "m/u.toml": "title = 'ok'\n"})
    (tmp_path / "specs" / "m" / "u.toml").write_bytes(b"title = 'ok'\ntitle2 = '\xff'\n")
    with pytest.raises(SpecError, match=r"^specs/m/a.toml:2: invalid TOML"):
        s.get("m:a")
    with pytest.raises(SpecError, match=r"^specs/m/u.toml:2: not valid UTF-8"):
        s.get("m:u")
    with pytest.raises(SpecError, match=r"unknown spec kind 'mm' \(did you mean m\?\)"):
        s.get("mm:a")


def test_deep_merge_replaces_lists() -> None:
    assert deep_merge({"a": {"b": 1, "c": [1, 2]}}, {"a": {"c": [3]}}) == {"a": {"b": 1, "c": [3]}}
