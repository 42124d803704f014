"""The command lines: --help; bad values and unknown flags exit 2 with a message; predict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from transformer import predict, train

ROOT = Path(__file__).resolve().parents[1]


def _exit_code(fn, argv) -> int:
    with pytest.raises(SystemExit) as exc:
        fn(argv)
    return exc.value.code


def test_help_lists_the_flags(capsys):
    assert _exit_code(train.main, ["--help"]) == 0
    out = capsys.readouterr().out
    for flag in (
        "--epochs",
        "--lr",
        "--optimizer",
        "--batch-size",
        "--schedule",
        "--grad-clip",
        "--ablate",
        "--arity",
        "--out",
        "--resume",
        "--seed",
        "--backend",
        "--config",
        "--patience",
        "--test-arity",
    ):
        assert flag in out, flag


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lr", "-1"], "must be > 0"),
        (["--batch-size", "0"], "must be > 0"),
        (["--arity", "11"], "out of range"),
        (["--arity", "x"], "cannot read"),
        (["--test-arity", "1"], "out of range"),
        (["--frobnicate"], "unrecognized arguments"),
        (["--ablate", "no_foo"], "unknown ablation"),
        (["--optimizer", "rmsprop"], "must be one of adam, adamw, sgd"),
        (["--dropout", "1.5"], "dropout"),
        (["--d-model", "30", "--n-heads", "4"], "divisible"),
        (["--epochs", "0"], "must be > 0"),
    ],
)
def test_bad_values_exit_with_code_2(tmp_path, capsys, argv, message):
    assert _exit_code(train.main, ["--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_config_file_errors_and_resume_without_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": {"lr": -0.5}}))
    assert _exit_code(train.main, ["--out", str(tmp_path), "--config", str(bad)]) == 2
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"learning_rate": 0.1}))
    assert _exit_code(train.main, ["--out", str(tmp_path), "--config", str(unknown)]) == 2
    assert _exit_code(train.main, ["--out", str(tmp_path), "--config", str(tmp_path / "none.json")]) == 2
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"lr": "fast"}))
    assert _exit_code(train.main, ["--out", str(tmp_path), "--config", str(typo)]) == 2
    assert _exit_code(train.main, ["--out", str(tmp_path / "fresh"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "lr must be > 0" in err and "unknown setting 'learning_rate'" in err and "no checkpoint" in err


def test_config_file_then_flags(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"d_model": 16, "n_heads": 2, "d_ff": 32, "lr": 0.01, "epochs": 5}))
    parser = train.build_parser()
    args = parser.parse_args(["--config", str(config), "--epochs", "1", "--ablate", "no_residual,no_posenc"])
    model_cfg, cfg = train.resolve_config(args, parser)
    assert (model_cfg.d_model, cfg.lr, cfg.epochs) == (16, 0.01, 1)
    assert model_cfg.no_residual and model_cfg.no_posenc and not model_cfg.no_ffn


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    argv = [
        "--out",
        str(run),
        "--epochs",
        "1",
        "--train-size",
        "64",
        "--batch-size",
        "32",
        "--d-model",
        "16",
        "--n-heads",
        "2",
        "--d-ff",
        "32",
        "--eval-size",
        "20",
        "--quiet",
        "--no-diagnostics",
    ]
    assert train.main(argv) == 0
    return run / train.CKPT_BEST


def test_predict_prints_answers_and_json(checkpoint, capsys):
    assert predict.main(["--ckpt", str(checkpoint), "Max(5,3,9)", "Min ( 1 , 2 )"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("Max(5,3,9) -> ")
    assert predict.main(["--ckpt", str(checkpoint), "--json", "First(4,1,7)"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["input"] == "First(4,1,7)" and len(result["top"]) == 3
    assert result["answer"] == result["top"][0][0]
    assert sum(p for _, p in result["top"]) <= 1.0 + 1e-6


@pytest.mark.parametrize("text", ["Max(5,3", "Foo(1,2,3)", "Max(12,3,4)", ""])
def test_predict_rejects_malformed_input_without_a_traceback(checkpoint, text):
    proc = subprocess.run(
        [sys.executable, "-m", "transformer.predict", "--ckpt", str(checkpoint), text],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "error:" in proc.stderr


def test_predict_reads_inputs_from_stdin(checkpoint):
    proc = subprocess.run(
        [sys.executable, "-m", "transformer.predict", "--ckpt", str(checkpoint), "--json"],
        input="Max(5,3,9)\nLast(1,2,3,4)\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["input"] for line in proc.stdout.splitlines()] == ["Max(5,3,9)", "Last(1,2,3,4)"]


def test_train_module_runs_as_a_program():
    proc = subprocess.run(
        [sys.executable, "-m", "transformer.train", "--batch-size", "0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "config, message",
    [
        ({"epochs": 1.5}, "epochs must be an integer, got 1.5"),
        ({"train": {"batch_size": True}}, "batch_size must be an integer, got True"),
        ({"split": [1, 2]}, "split must be three fractions"),
        ({"split": [0.5, "a", 0.5]}, "must be a number"),
        ({"lr": float("nan")}, "lr must be a finite number"),
        ({"diagnostics_epochs": "1,5"}, "diagnostics_epochs must be a list of integers"),
        ({"model": [16]}, "must be a JSON object of settings"),
        ({"pre_ln": "yes"}, "pre_ln must be true or false"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_config_values_are_held_to_the_rules_of_the_flags(tmp_path, capsys, config, message):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    assert _exit_code(train.main, ["--out", str(tmp_path / "run"), "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"--config {path}: " in err and message in err, err
    assert not (tmp_path / "run").exists()


def test_config_arity_may_be_a_json_integer(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"arity": 4, "test_arity": "2-3"}))
    parser = train.build_parser()
    _, cfg = train.resolve_config(parser.parse_args(["--config", str(path)]), parser)
    assert (cfg.arity, cfg.test_arity) == ("4", "2-3")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--seed", "-1"], "--seed: must be >= 0"),
        (["--split", "0,0,0"], "--split: must be three fractions > 0"),
        (["--split", "1,0,0"], "--split: must be three fractions > 0"),
        (["--split", "nan,1,1"], "--split: must be a finite number"),
        (["--lr", "inf"], "--lr: must be a finite number"),
    ],
)
def test_bad_seed_and_split_exit_2_before_anything_is_written(tmp_path, capsys, flags, message):
    assert _exit_code(train.main, ["--out", str(tmp_path / "run"), *flags]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_an_out_that_cannot_be_a_run_folder_exits_2(tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("keep")
    for out, message in [(file, "is a file"), (file / "run", "cannot create the folder"),
                         (Path("/proc/microtensor-run"), "cannot create the folder")]:
        assert _exit_code(train.main, ["--out", str(out), "--epochs", "1"]) == 2
        err = capsys.readouterr().err
        assert f"--out {out}" in err and message in err, err
    assert file.read_text() == "keep"
