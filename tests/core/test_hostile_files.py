"""The fuzz corpus (tests/fuzz/make_corpus.py) through the real front ends: every hostile or corrupt file ends in one
line on stderr naming the problem and exit code 2 (or loads, for the harmless ones), never a traceback, within 10 s
and without more memory than twice what a legitimate file of its kind takes to read."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "fuzz"))

from make_corpus import make_corpus  # noqa: E402

TIME_LIMIT_S = 10.0
RUNNERS = 2          # the corpus is split between this many runner processes
GROWTH_SLACK_MB = 128   # on top of twice a legitimate file's growth: what the largest corpus files may need


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    try:
        yield _run(make_corpus(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)   # ~250 MB


def _run(manifest: Path) -> tuple[dict, dict]:
    runner = ROOT / "tests" / "fuzz" / "run_corpus.py"
    procs = [subprocess.Popen([sys.executable, str(runner), str(manifest), "--part", f"{k}/{RUNNERS}"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(1, RUNNERS + 1)]
    out = {}
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        for line in stdout.splitlines():
            result = json.loads(line)
            out[result["name"]] = result
    cases = {c["name"]: c for c in json.loads(manifest.read_text())["cases"]}
    assert set(out) == set(cases)
    return cases, out


def _problems(case: dict, result: dict, baseline: dict) -> list[str]:
    """What is wrong with one result; `baseline` is the result of a legitimate file of the same kind."""
    problems = []
    lines = result["stderr"].strip().splitlines()
    if result["timed_out"] or result["seconds"] > TIME_LIMIT_S:
        problems.append(f"took {result['seconds']:.1f} s")
    if result["peak_mb"] > 2 * baseline["peak_mb"]:
        problems.append(f"peaked at {result['peak_mb']:.0f} MB, over twice the {baseline['peak_mb']:.0f} MB of a "
                        "legitimate file")
    # The peaks include torch (~150 MB); what the reader itself takes is checked too.
    if result["growth_mb"] > 2 * baseline["growth_mb"] + GROWTH_SLACK_MB:
        problems.append(f"took {result['growth_mb']:.0f} MB, over twice the {baseline['growth_mb']:.0f} MB of a "
                        f"legitimate file plus {GROWTH_SLACK_MB} MB")
    if "Traceback" in result["stderr"] or result["code"] not in (0, 2):
        problems.append(f"exit code {result['code']}: {result['stderr'][-1500:]}")
    elif case["expect"] == "ok" and result["code"] != 0:
        problems.append(f"was refused: {result['stderr'].strip()}")
    elif case["expect"] == "error" and result["code"] != 2:
        problems.append("was accepted")
    elif result["code"] == 2:
        if len(lines) != 1 or not lines[0].startswith("error: "):
            problems.append(f"printed {len(lines)} lines instead of one error line: {result['stderr'][:800]}")
        elif case["match"] and not re.search(case["match"], lines[0]):
            problems.append(f"said {lines[0][:600]!r}, which does not match {case['match']!r}")
    return problems


def test_every_hostile_file_ends_in_one_line_within_the_limits(results):
    cases, out = results
    baselines = {(c["kind"], c["front"]): out[name] for name, c in cases.items() if c["legit"]}
    failures = []
    worst = defaultdict(lambda: (0.0, 0.0, 0.0, 0))
    for name, case in cases.items():
        result = out[name]
        # Fronts without a legitimate run of their own (uv-obj, mesh-sequence) compare with the kind's largest.
        base = baselines.get((case["kind"], case["front"])) or max(
            (b for (k, _), b in baselines.items() if k == case["kind"]), key=lambda b: b["peak_mb"])
        failures += [f"{name}: {p}" for p in _problems(case, result, base)]
        mb, grow, s, n = worst[case["kind"]]
        worst[case["kind"]] = (max(mb, result["peak_mb"]), max(grow, result["growth_mb"]),
                               max(s, result["seconds"]), n + 1)
    summary = "; ".join(f"{kind}: {n} runs, worst {mb:.0f} MB (+{grow:.0f}), {s:.1f} s"
                        for kind, (mb, grow, s, n) in worst.items())
    legit = ", ".join(f"{k}/{f} {b['peak_mb']:.0f} MB (+{b['growth_mb']:.0f})" for (k, f), b in baselines.items())
    print(f"\nfuzz corpus: {summary}; legitimate files: {legit}")
    assert not failures, "\n".join(failures)
