"""The benchmark script keeps working (its numbers are not checked: no timed tests)."""
from __future__ import annotations

from benchmarks import speed as benchmark


def test_benchmark_prints_a_row_per_setting_and_engine(tmp_path, capsys):
    rows, report = benchmark.main(["--cpu-small", "--models", "tiny-sd1", "--runs", "1", "--warmup", "0",
                                   "--steps", "2", "--size", "32", "--cache", str(tmp_path),
                                   "--settings", "channels_last"])
    settings = [s.name for s in benchmark.cpu_settings() if "channels_last" in s.name]
    assert settings
    assert [(r.model, r.setting, r.engine) for r in rows] == [
        ("tiny-sd1", s, e) for s in settings for e in ("kiln", "diffusers")]
    for r in rows:
        assert r.its_b1 and r.its_b4 and r.sec_per_image  # every number was measured
        assert (r.load_s is not None) == (r.engine == "kiln")
    printed = capsys.readouterr().out
    assert "UNet it/s b1" in printed and "s/image" in printed
    assert printed.count("| tiny-sd1 |") == len(rows)
    assert "Kiln s/image" in report


def test_threads_sweep_times_one_thread_against_all(tmp_path, capsys):
    _, report = benchmark.main(["--threads-sweep", "--models", "tiny-sd1", "--size", "32", "--steps", "2",
                                "--runs", "1", "--cache", str(tmp_path)])
    rows = [line for line in report.splitlines() if line.startswith("| tiny-sd1 |")]
    assert len(rows) == 3  # batch 1, 2, 4
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[4]) > 0 and float(cells[5]) > 0  # both thread counts were timed
