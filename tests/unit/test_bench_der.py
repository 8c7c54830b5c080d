"""bench.der's arithmetic and tables: pooled error rates, the README block regenerated from a run's JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("pyannote.metrics")

from bench import der
from whisper_triton.turns import Turn


def test_error_components_and_pooling() -> None:
    reference = [Turn(0.0, 4.0, "a"), Turn(5.0, 9.0, "b")]
    perfect = der.error_components(reference, [Turn(0.0, 4.0, "x"), Turn(5.0, 9.0, "y")], duration=10.0)
    assert 7.0 <= perfect["total"] < 8.0 and perfect["rate"] == 0.0  # collars cut the turns' edges
    one_speaker = der.error_components(reference, [Turn(0.0, 9.0, "x")], duration=10.0, collar=0.0)
    assert one_speaker["confusion"] == pytest.approx(4.0) and one_speaker["false_alarm"] == pytest.approx(1.0)
    totals = der.Totals()
    totals.add(perfect)
    totals.add(one_speaker)
    assert totals.rate == pytest.approx(5.0 / (perfect["total"] + 8.0))
    assert der.Totals().rate == 0.0


def test_the_readme_block_is_regenerated_from_a_run(tmp_path: Path) -> None:
    row = {"recording": "AMI report", "files": 4, "seconds": 120.0, "given": False, "found": "2/2 3/4",
           "der_fair": 0.271, "der_strict": 0.547, "missed": 0.056, "false_alarm": 0.028, "confusion": 0.188,
           "cpu_s_per_min": 4.8, "wall_per_audio": 0.1}
    run = {"diarization": [row], "transcripts": [{"split": "report", "files": 4, "speech_s": 50.0,
                                                  "wrong_speaker": 0.152, "no_speaker": 0.125,
                                                  "wrong_or_none": 0.277}],
           "meta": {"command": "python -m bench.der --transcripts", "host": "vm", "threads": 1,
                    "date": "2026-12-05T01:07:00+0000"}}
    results = tmp_path / "run.json"
    results.write_text(json.dumps(run))
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{der.README_BEGIN}\nold\n{der.README_END}\nafter\n")
    assert der.main(["--readme", str(readme), "--results", str(results)]) == 0
    text = readme.read_text()
    assert "old" not in text and text.startswith("before\n") and text.endswith("after\n")
    assert "| AMI report | 4 x 30 s | no | 2/2 3/4 | 27.1 % | 5.6 % | 2.8 % | 18.8 % | 54.7 % | 4.8 |" in text
    assert "| AMI report | 4 | 50 s | 15.2 % | 12.5 % | 27.7 % |" in text
    assert "`bench/results/run.json`" in text
