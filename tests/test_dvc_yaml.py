"""dvc.yaml's pack stage depends on every module that decides a pack's bytes, so a change to
one of them reruns pack; the rest of what the stage imports is named here as not shaping bytes."""

import yaml

from tests.test_layers import MODULES, SRC, _imports

REPO = SRC.parents[1]

# What the pack stage imports that never decides a byte of the pack: errors and their text,
# progress and processes, locks and temporaries, and the readers of the previous version (which
# only decide what is carried over whole; a carried shard is checked by its digest).
NOT_BYTES = {
    "imgpack",
    "imgpack.errors",
    "imgpack.util.text",
    "imgpack.util.progress",
    "imgpack.util.cores",
    "imgpack.util.urls",
    "imgpack.util.locks",
    "imgpack.util.outputs",
    "imgpack.util.projects",  # where ingest's state lives
    "imgpack.parallel.workers",
    "imgpack.parallel.cluster",
    "imgpack.check.validated",
    "imgpack.ingest.cache",
    "imgpack.ingest.remote",
    "imgpack.ingest.found",
    "imgpack.util.entry",
}


def _closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen or name not in MODULES:
            continue
        seen.add(name)
        todo.extend(_imports(MODULES[name]))
    return seen


def _covered(module: str, deps: list[str]) -> bool:
    path = MODULES[module].relative_to(REPO).as_posix()
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def test_the_pack_stage_depends_on_every_module_that_decides_the_bytes():
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["pack"]
    deps = [dep for dep in stage["deps"] if dep.startswith("src/")]
    entry = stage["cmd"].split()[2]  # python -m imgpack.stages.pack ...
    imported = _closure(entry)
    uncovered = sorted(
        m
        for m in imported
        if not m.startswith("imgpack.read") and m not in NOT_BYTES
        if not _covered(m, deps)
    )
    assert uncovered == []
    assert all((REPO / dep).exists() for dep in deps)
