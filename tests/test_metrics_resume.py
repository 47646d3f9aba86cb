"""drop_records_after: what a resume removes from metrics.jsonl, the records written after
the checkpoint it starts from (the resumed session writes that stretch again)."""

import json

from dreamrl.run.logging import drop_records_after, read_metrics, tensorboard_purge_step
from dreamrl.rundir import RunDir


def write_lines(tmp_path, lines: list[str]) -> None:
    RunDir(tmp_path).metrics.write_text("".join(lines))


def test_records_past_the_checkpoint_step_go_and_the_rest_stay_as_written(tmp_path):
    records = [
        {"step": 100, "loss/total": 1.5, "train/updates": 10},
        {"step": 200, "eval/return": 20.0},
        {"step": 200, "diag/reward_error_1": 0.1},
        {"step": 250, "loss/total": 1.2, "train/updates": 30},
        {"step": 300, "eval/return": 35.0},
    ]
    write_lines(tmp_path, [json.dumps(r) + "\n" for r in records])
    assert drop_records_after(tmp_path, 200, 20) == 2
    assert read_metrics(tmp_path) == records[:3]
    assert drop_records_after(tmp_path, 200, 20) == 0  # nothing more to drop


def test_offline_records_all_at_step_0_are_cut_by_their_updates(tmp_path):
    records = [{"step": 0, "train/updates": u, "loss/total": 1.0 / u} for u in (100, 200, 300)]
    records.append({"step": 0, "eval/return": 9.0, "train/updates": 300})
    write_lines(tmp_path, [json.dumps(r) + "\n" for r in records])
    assert drop_records_after(tmp_path, 0, 200) == 2
    assert [r["train/updates"] for r in read_metrics(tmp_path)] == [100, 200]


def test_a_half_written_last_line_is_dropped_and_counted(tmp_path):
    whole = json.dumps({"step": 10, "loss/total": 2.0}) + "\n"
    write_lines(tmp_path, [whole, '{"step": 20, "loss/to'])
    assert drop_records_after(tmp_path, 50, 5) == 1
    assert RunDir(tmp_path).metrics.read_text() == whole


def test_a_run_dir_without_metrics_is_left_alone(tmp_path):
    assert drop_records_after(tmp_path, 0, 0) == 0
    assert not RunDir(tmp_path).metrics.exists()


def test_tensorboard_purges_past_the_last_step_kept_except_for_offline_runs(tmp_path):
    assert tensorboard_purge_step(tmp_path) is None  # a new run: nothing to purge
    write_lines(tmp_path, [json.dumps({"step": s, "train/updates": s // 10}) + "\n" for s in (0, 150, 300)])
    assert tensorboard_purge_step(tmp_path) == 301
    write_lines(tmp_path, [json.dumps({"step": 0, "train/updates": u}) + "\n" for u in (5, 10)])
    assert tensorboard_purge_step(tmp_path) is None  # plotted against updates: no one axis to purge by
