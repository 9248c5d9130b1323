"""Artifacts are content-addressed, published whole or not at all, and built once."""

import threading
import time

import pytest

from lm_core.workspace import ArtifactError, Workspace, fingerprint


def build(ws: Workspace, fp: str, rows: int = 3, fail: bool = False, resume: bool = False):
    with ws.build("clean", fp, config={"a": 1}, inputs={"crawl": "abc"}, resume=resume) as b:
        if b.published:
            return b.ref, False
        (b.dir / "docs").mkdir()
        (b.dir / "docs" / "part-00000.arrow").write_bytes(b"x" * rows)
        if fail:
            raise RuntimeError("stage crashed")
        b.stats["rows"] = rows
    return b.ref, True


def test_fingerprint_changes_with_every_ingredient():
    base = fingerprint("clean", {"a": 1}, {"crawl": "f1"}, 1)
    assert base == fingerprint("clean", {"a": 1}, {"crawl": "f1"}, 1)
    variants = [
        fingerprint("chunk", {"a": 1}, {"crawl": "f1"}, 1),
        fingerprint("clean", {"a": 2}, {"crawl": "f1"}, 1),
        fingerprint("clean", {"a": 1}, {"crawl": "f2"}, 1),
        fingerprint("clean", {"a": 1}, {"crawl": "f1"}, 2),
    ]
    assert base not in variants and len(set(variants)) == 4


def test_publish_writes_manifest_and_second_build_is_a_no_op(workspace):
    ws = Workspace(workspace)
    ref, built = build(ws, "fp1")
    assert built and ref.dir == workspace.resolve() / "clean" / "fp1"
    m = ref.manifest()
    assert m["stage"] == "clean" and m["fingerprint"] == "fp1" and m["rows"] == 3
    assert m["inputs"] == {"crawl": "abc"} and m["files"] == {"docs/part-00000.arrow": 3}
    assert "python" in m["versions"] and m["created"]
    ref2, built2 = build(ws, "fp1", rows=99)
    assert not built2 and ref2 == ref
    assert not list((workspace / "clean").glob(".partial-*"))


def test_a_failed_build_publishes_nothing_and_a_rerun_completes(workspace):
    ws = Workspace(workspace)
    with pytest.raises(RuntimeError):
        build(ws, "fp1", fail=True)
    assert not ws.is_published("clean", "fp1")
    assert not (workspace / "clean" / "fp1").exists()
    assert not list((workspace / "clean").glob(".partial-*"))
    _, built = build(ws, "fp1")
    assert built and ws.is_published("clean", "fp1")


def test_a_resumable_build_keeps_its_partial_folder(workspace):
    ws = Workspace(workspace)
    with pytest.raises(RuntimeError):
        build(ws, "fp1", fail=True, resume=True)
    assert (workspace / "clean" / ".partial-fp1" / "docs" / "part-00000.arrow").exists()
    assert not ws.is_published("clean", "fp1")


def test_concurrent_builders_of_one_artifact_build_it_once(workspace):
    ws = Workspace(workspace)
    builds = []

    def slow_build():
        with ws.build("clean", "fp1", config={}, inputs={}) as b:
            if b.published:
                return
            time.sleep(0.3)
            (b.dir / "x").write_text("x")
            builds.append(threading.get_ident())

    threads = [threading.Thread(target=slow_build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and ws.is_published("clean", "fp1")


def test_rebuild_replaces_a_published_artifact(workspace):
    _, built = build(Workspace(workspace), "fp1", rows=3)
    ref, built = build(Workspace(workspace, rebuild=["clean"]), "fp1", rows=5)
    assert built and ref.manifest()["rows"] == 5
    assert not [p for p in (workspace / "clean").iterdir() if p.name.startswith(".replaced")]


def test_building_names_the_builds_running_and_remove_unpublishes_whole(workspace):
    ws = Workspace(workspace)
    build(ws, "done")
    assert ws.building() == []
    with ws.build("clean", "running", config={}, inputs={}) as b:
        assert ws.building() == ["clean/running"]  # another process's lock, seen through its own open file
        (b.dir / "x").write_text("x")
    assert ws.building() == []
    ws.remove("clean", "done")
    assert not ws.is_published("clean", "done") and ws.is_published("clean", "running")
    assert [a["fingerprint"] for a in ws.artifacts("clean")] == ["running"]
    assert not [p for p in (workspace / "clean").iterdir() if p.name.startswith(".removed")]
    ws.remove("clean", "done")  # already gone: nothing to do
    assert build(ws, "done")[1]  # and it can be built again


def test_resolve_latest_and_prefixes(workspace):
    ws = Workspace(workspace)
    build(ws, "aaa111")
    time.sleep(1.1)  # manifests record creation to the second
    build(ws, "aab222")
    assert ws.resolve("clean").fingerprint == "aab222"
    assert ws.resolve("clean", "aaa").fingerprint == "aaa111"
    with pytest.raises(ArtifactError, match="more than one"):
        ws.resolve("clean", "aa")
    with pytest.raises(ArtifactError, match="no clean artifact matches"):
        ws.resolve("clean", "zzz")
    with pytest.raises(ArtifactError, match="no published chunk artifact"):
        ws.resolve("chunk")


def test_a_corrupt_manifest_is_named(workspace):
    ws = Workspace(workspace)
    ref, _ = build(ws, "fp1")
    (ref.dir / "_manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt"):
        ws.ref("clean", "fp1")


def test_upstream_follows_the_manifests_inputs_that_name_artifacts(tmp_path):
    ws = Workspace(tmp_path)

    def publish(stage, inputs):
        fp = fingerprint(stage, {}, inputs, 0)
        with ws.build(stage, fp, config={}, inputs=inputs):
            pass
        return fp

    crawl = publish("crawl", {"snapshot": "2026-01-01T02:00:00Z"})
    clean = publish("clean", {"crawl": crawl, "crawl_content": "0123456789abcdef"})
    chunk = publish("chunk", {"clean": clean, "evaluate.sources": "fedcba9876543210"})
    assert ws.upstream("chunk", chunk) == {"clean": clean, "crawl": crawl}  # not the digests: no such stage
    ws.remove("clean", clean)
    assert ws.upstream("chunk", chunk) == {"clean": clean}  # named still, but what it came from is gone
