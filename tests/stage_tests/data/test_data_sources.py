"""Corpus sources: every reader type, the spec model, and one clear error per bad input."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import data_testlib as d
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from genesis_build.errors import FieldError, GenesisError
from genesis_build.stage import SpecView
from stages.corpus import CorpusSpec, check_corpus, resolve_path
from stages.corpus_source import _source_select
from stages.data_lib.ingest import DOCS_FILE, build_source


def run_source(spec: CorpusSpec, name: str, ws: Path, out: Path) -> tuple[dict, pa.Table]:
    out.mkdir(parents=True)
    i = [s.name for s in spec.sources].index(name)
    stats = build_source(spec.sources[i], i, d.source_files(spec, name, ws), ws, out, f"corpus-source:t/{name}", d.noop)
    return stats, pa.ipc.open_file(pa.memory_map(str(out / DOCS_FILE))).read_all()


def test_text_files_one_document_each_sorted_and_deduplicated(tmp_path: Path) -> None:
    d.write_docs(tmp_path / "data", {"b.txt": "second doc\r\n", "a.txt": "first doc", "c.txt": "second doc\n",
                                     "sub/d.txt": "nested doc"})
    spec = d.corpus_spec([{"name": "t", "type": "text", "glob": "data/**/*.txt"}])
    stats, table = run_source(spec, "t", tmp_path, tmp_path / "out")
    assert table["text"].to_pylist() == ["first doc", "second doc", "nested doc"]
    assert stats["documents"] == 3 and stats["documents_read"] == 4 and stats["files"] == 4
    assert stats["dropped"]["duplicate"] == 1 and stats["dup_rate"] == pytest.approx(0.25)
    assert stats["bytes"] == len("first docsecond docnested doc")
    assert json.loads((tmp_path / "out" / "stats.json").read_text()) == stats


def test_jsonl_text_and_language_fields(tmp_path: Path) -> None:
    rows = [{"body": "hello world", "lang": "en"}, {"body": "bonjour le monde", "lang": "fr"},
            {"body": "hallo welt", "lang": "de"}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    spec = d.corpus_spec([{"name": "j", "type": "jsonl", "path": "a.jsonl", "text_field": "body",
                           "language_field": "lang", "filters": {"languages": ["en", "fr"]}}])
    stats, table = run_source(spec, "j", tmp_path, tmp_path / "out")
    assert table["text"].to_pylist() == ["hello world", "bonjour le monde"]
    assert table["language"].to_pylist() == ["en", "fr"]
    assert stats["languages"] == {"en": 1, "fr": 1} and stats["dropped"]["language"] == 1


def test_jsonl_gz_is_read(tmp_path: Path) -> None:
    import gzip

    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(b'{"text": "zipped doc"}\n'))
    spec = d.corpus_spec([{"name": "z", "type": "jsonl", "glob": "*.jsonl.gz"}])
    _, table = run_source(spec, "z", tmp_path, tmp_path / "out")
    assert table["text"].to_pylist() == ["zipped doc"]


def test_parquet_reads_only_the_text_column(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": [1, 2, 3], "content": ["alpha doc", "beta doc", "gamma doc"]}), tmp_path / "p.parquet",
                   row_group_size=2)
    spec = d.corpus_spec([{"name": "p", "type": "parquet", "path": "p.parquet", "text_field": "content", "language": "xx"}])
    stats, table = run_source(spec, "p", tmp_path, tmp_path / "out")
    assert table["text"].to_pylist() == ["alpha doc", "beta doc", "gamma doc"]
    assert stats["languages"] == {"xx": 3}


def test_save_to_disk_dataset_and_datasetdict(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_dict({"text": ["one doc", "two doc"]}).save_to_disk(str(tmp_path / "ds"))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"t": ["train doc"]}),
                          "test": datasets.Dataset.from_dict({"t": ["test doc"]})}).save_to_disk(str(tmp_path / "dd"))
    spec = d.corpus_spec([{"name": "ds", "type": "disk", "path": "ds"},
                          {"name": "dd", "type": "disk", "path": "dd", "split": "test", "text_field": "t"}])
    assert run_source(spec, "ds", tmp_path, tmp_path / "o1")[1]["text"].to_pylist() == ["one doc", "two doc"]
    assert run_source(spec, "dd", tmp_path, tmp_path / "o2")[1]["text"].to_pylist() == ["test doc"]


def test_hub_type_goes_through_load_dataset_streaming(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real load_dataset code path, pointed at a local dataset directory (no network here).
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")  # keep ~/.cache clean
    (tmp_path / "hubds").mkdir()
    (tmp_path / "hubds" / "train.jsonl").write_text("".join(json.dumps({"text": f"hub doc {i}"}) + "\n" for i in range(5)))
    spec = d.corpus_spec([{"name": "h", "type": "hub", "dataset": str(tmp_path / "hubds"), "max_documents": 3}])
    stats, table = run_source(spec, "h", tmp_path, tmp_path / "out")
    assert table["text"].to_pylist() == ["hub doc 0", "hub doc 1", "hub doc 2"]
    assert stats["documents_read"] == 3


def test_pydoc_topics_and_stdlib_placeholder(tmp_path: Path) -> None:
    stdlib = sysconfig.get_paths()["stdlib"]
    assert resolve_path("{stdlib}/json/*.py") == f"{stdlib}/json/*.py"
    spec = d.corpus_spec([{"name": "docs", "type": "pydoc-topics"},
                          {"name": "code", "type": "text", "glob": "{stdlib}/json/*.py", "language": "code"}])
    stats, table = run_source(spec, "docs", tmp_path, tmp_path / "o1")
    assert stats["documents"] > 50 and stats["files"] == 1
    assert any("assert" in t for t in table["text"].to_pylist()[:5])
    stats, table = run_source(spec, "code", tmp_path, tmp_path / "o2")
    assert stats["documents"] == len(list(Path(stdlib, "json").glob("*.py")))
    assert any("def dumps(" in t for t in table["text"].to_pylist())


def test_source_key_holds_only_that_source_without_weight() -> None:
    spec = d.corpus_spec([{"name": "a", "type": "text", "glob": "a/*", "weight": 2.0},
                          {"name": "b", "type": "text", "glob": "b/*", "filters": {"min_chars": 9}}],
                         filters={"max_chars": 1000})
    dump = spec.model_dump(mode="json")
    sel = _source_select(dump, "a")
    assert list(sel) == ["sources.a"]
    assert "weight" not in sel["sources.a"] and sel["sources.a"]["glob"] == "a/*"
    assert sel["sources.a"]["filters"]["max_chars"] == 1000  # corpus-level default merged in
    assert _source_select(dump, "b")["sources.b"]["filters"]["min_chars"] == 9
    assert _source_select(dump, "b")["sources.b"]["filters"]["max_chars"] == 1000
    changed = d.corpus_spec([{"name": "a", "type": "text", "glob": "a/*", "weight": 5.0},
                             {"name": "b", "type": "text", "glob": "b/*", "filters": {"min_chars": 10}}],
                            filters={"max_chars": 1000}).model_dump(mode="json")
    assert _source_select(changed, "a") == sel  # weight and the other source's filters are not a's business
    assert _source_select(changed, "b") != _source_select(dump, "b")


# ---- bad input


@pytest.mark.parametrize("source,fragment", [
    ({"name": "x", "type": "jsonl"}, "needs exactly one of `path` or `glob`"),
    ({"name": "x", "type": "hub"}, "needs `dataset`"),
    ({"name": "x", "type": "text", "path": "a", "dataset": "b/c"}, "only for type 'hub'"),
    ({"name": "x y", "type": "text", "path": "a"}, "must be letters"),
    ({"name": "x", "type": "csv", "path": "a"}, "Input should be"),
    ({"name": "x", "type": "text", "path": "a", "weight": 0}, "greater than 0"),
    ({"name": "x", "type": "text", "path": "a", "filters": {"min_chars": 10, "max_chars": 5}}, "below min_chars"),
    ({"name": "x", "type": "text", "path": "a", "filters": {"min_char": 10}}, "Extra inputs"),
])
def test_spec_model_rejects_bad_sources(source: dict, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment.replace("(", r"\(").replace("`", "`")):
        d.corpus_spec([source])


def test_duplicate_source_names_rejected() -> None:
    with pytest.raises(ValidationError, match="two sources are named 'a'"):
        d.corpus_spec([{"name": "a", "type": "text", "path": "x"}, {"name": "a", "type": "text", "path": "y"}])


def test_check_names_the_field_of_a_missing_path_or_empty_glob(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ok.txt").write_text("fine")
    spec = d.corpus_spec([{"name": "a", "type": "text", "path": "ok.txt"}, {"name": "b", "type": "jsonl", "path": "nope.jsonl"}])
    with pytest.raises(FieldError) as e:
        check_corpus(SpecView.of(spec, "corpus:t", tmp_path))
    assert e.value.field == "sources.1.path" and "'b'" in e.value.message and "nope.jsonl does not exist" in e.value.message
    spec = d.corpus_spec([{"name": "g", "type": "text", "glob": ["ok.txt", "data/*.md"]}])
    with pytest.raises(FieldError) as e:
        check_corpus(SpecView.of(spec, "corpus:t", tmp_path))
    assert e.value.field == "sources.0.glob" and "data/*.md matches no file" in e.value.message
    spec = d.corpus_spec([{"name": "k", "type": "disk", "path": "ok.txt"}])
    with pytest.raises(FieldError, match="not a directory"):
        check_corpus(SpecView.of(spec, "corpus:t", tmp_path))


def _fails(tmp_path: Path, spec: CorpusSpec, name: str) -> str:
    out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
    with pytest.raises(GenesisError) as e:
        run_source(spec, name, tmp_path, out)
    msg = str(e.value)
    assert "\n" not in msg
    assert f"source '{name}'" in msg and "corpus-source:t/" in msg
    return msg


def test_missing_text_field_names_source_field_and_file(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": "ok"}\n{"body": "no text field", "id": 3}\n')
    spec = d.corpus_spec([{"name": "j", "type": "jsonl", "path": "a.jsonl"}])
    msg = _fails(tmp_path, spec, "j")
    assert "a.jsonl:2" in msg and "no field 'text' (text_field)" in msg and "body, id" in msg


def test_missing_parquet_column_lists_the_columns(tmp_path: Path) -> None:
    pq.write_table(pa.table({"content": ["x"]}), tmp_path / "p.parquet")
    msg = _fails(tmp_path, d.corpus_spec([{"name": "p", "type": "parquet", "path": "p.parquet"}]), "p")
    assert "no column 'text' (text_field)" in msg and "columns: content" in msg


def test_non_string_text_field(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": 42}\n')
    msg = _fails(tmp_path, d.corpus_spec([{"name": "j", "type": "jsonl", "path": "a.jsonl"}]), "j")
    assert "holds int, not text" in msg


def test_bad_json_line(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": "ok"}\n{"text": \n')
    msg = _fails(tmp_path, d.corpus_spec([{"name": "j", "type": "jsonl", "path": "a.jsonl"}]), "j")
    assert "a.jsonl:2: not valid JSON" in msg


def test_binary_and_non_utf8_files(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("fine text")
    (tmp_path / "d" / "b.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    msg = _fails(tmp_path, d.corpus_spec([{"name": "t", "type": "text", "glob": "d/*"}]), "t")
    assert "d/b.bin looks binary" in msg
    (tmp_path / "d" / "b.bin").write_bytes("caf\u00e9".encode("latin-1"))
    msg = _fails(tmp_path, d.corpus_spec([{"name": "t", "type": "text", "glob": "d/*"}]), "t")
    assert "d/b.bin is not UTF-8" in msg and "0xe9" in msg


def test_unreadable_file(tmp_path: Path) -> None:
    # A file that cannot be read (a directory where a file was listed: root ignores permission bits)
    (tmp_path / "a.txt").mkdir()
    spec = d.corpus_spec([{"name": "t", "type": "text", "path": "a.txt"}])
    (tmp_path / "out").mkdir()
    with pytest.raises(GenesisError) as e:
        build_source(spec.sources[0], 0, [tmp_path / "a.txt"], tmp_path, tmp_path / "out", "corpus-source:t/t", d.noop)
    assert "corpus-source:t/t: source 't' (sources[0]): cannot read a.txt: Is a directory" == str(e.value)


def test_everything_filtered_out_says_why(tmp_path: Path) -> None:
    d.write_docs(tmp_path / "d", {"a.txt": "short", "b.txt": "tiny"})
    spec = d.corpus_spec([{"name": "t", "type": "text", "glob": "d/*.txt", "filters": {"min_chars": 100}}])
    msg = _fails(tmp_path, spec, "t")
    assert "no documents left after filters (2 read: 2 too short)" in msg
    spec = d.corpus_spec([{"name": "t", "type": "text", "glob": "d/*.txt", "language": "de", "filters": {"languages": ["en"]}}])
    msg = _fails(tmp_path, spec, "t")
    assert "2 language" in msg and "['en']" in msg and "['de']" in msg


def test_glob_matching_nothing_at_run_time(tmp_path: Path) -> None:
    msg = _fails(tmp_path, d.corpus_spec([{"name": "t", "type": "text", "glob": "none/*.txt"}]), "t")
    assert "none/*.txt matches no file" in msg
