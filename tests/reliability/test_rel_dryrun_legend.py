"""``--dry-run`` judges "cached" by stat signatures only (by design: it must stay fast), so a corrupted
object still shows as cached; the legend must say so and point to ``cache verify`` (finding 9)."""

from __future__ import annotations

from rel_helpers import RelWorkspace, node_objects, one_logical_line, record, rws  # noqa: F401 (fixture)


def test_dry_run_legend_names_the_limit_and_cache_verify(rws: RelWorkspace) -> None:
    rws.write_spec("demo", 'files = ["data/*.txt"]\n')
    assert rws.cli().code == 0
    m = node_objects(rws.cache)["read:demo"]
    f = rws.cache / "objects" / m["key"][:2] / m["key"] / "data" / m["outputs"][0]["path"]
    f.chmod(0o644)
    b = bytearray(f.read_bytes())
    b[0] ^= 0x01
    f.write_bytes(bytes(b))
    ok = False
    try:
        for env in ({"GENESIS_NO_FASTPATH": "1"}, {}, {}):  # full path, then the recorded fast-path answer
            r = rws.cli("--dry-run", env=env)
            assert r.code == 0, r.err
            out = one_logical_line(r.out)
            assert "4 cached, 0 to run" in out, out  # the documented limit: not rehashed here
            assert "stat signatures" in out and "genesis-build cache verify" in out, out
        ok = True
    finally:
        record("corruption", "dry-run legend names stat-only check and cache verify", ok)
    r = rws.cli("cache", "verify")
    assert r.code == 1 and "1 quarantined" in r.out
