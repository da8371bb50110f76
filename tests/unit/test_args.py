from pathlib import Path

import pytest

from dogbreed.training.cli import get_args_parser


def test_values_as_sagemaker_passes_them(clean_env):
    args = get_args_parser().parse_args(
        [
            "--learning-rate",
            "0.05",
            "--batch-size",
            "64",
            "--epochs",
            "2",
            "--pretrained",
            "False",
            "--freeze-backbone",
            "True",
            "--amp",
            "true",
            "--model",
            "mobilenet_v2",
            "--momentum",
            "0.8",
            "--weight-decay",
            "0.0001",
            "--image-size",
            "128",
            "--workers",
            "0",
            "--seed",
            "7",
            "--patience",
            "0",
            "--optimizer",
            "sgd",
            "--debug-collections",
            "losses,weights,gradients",
        ]
    )
    assert args.learning_rate == 0.05 and args.batch_size == 64 and args.epochs == 2
    assert args.pretrained is False and args.freeze_backbone is True and args.amp is True
    assert args.model == "mobilenet_v2" and args.optimizer == "sgd" and args.momentum == 0.8
    assert args.image_size == 128 and args.workers == 0 and args.seed == 7 and args.patience == 0
    assert args.debug_collections == ["losses", "weights", "gradients"]


def test_documented_defaults(clean_env):
    args = get_args_parser().parse_args([])
    assert (args.model, args.epochs, args.batch_size, args.learning_rate) == ("resnet18", 10, 32, 0.001)
    assert args.pretrained is True and args.freeze_backbone is True and args.amp is False
    assert args.image_size == 224 and args.patience == 3 and args.optimizer == "adam"
    assert args.debug_out_dir is None and args.bad_images == "skip"


def test_paths_fall_back_to_sagemaker_variables(clean_env, tmp_path):
    clean_env.setenv("SM_CHANNEL_TRAINING", "/data/all")
    clean_env.setenv("SM_CHANNEL_TEST", "/data/test")
    clean_env.setenv("SM_CHANNEL_PRETRAINED", "/data/weights")
    clean_env.setenv("SM_MODEL_DIR", str(tmp_path / "m"))
    clean_env.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    args = get_args_parser().parse_args([])
    assert args.data_dir == Path("/data/all") and args.test_dir == Path("/data/test")
    assert args.train_dir is None
    assert args.pretrained_weights == Path("/data/weights")
    assert args.model_dir == tmp_path / "m"
    assert args.checkpoint_dir == tmp_path / "checkpoints"
    assert args.output_data_dir == tmp_path / "output" / "data"
    # An explicit flag wins over the variable.
    assert get_args_parser().parse_args(["--data-dir", "x"]).data_dir == Path("x")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--learning-rate", "-0.1"], "argument --learning-rate/--lr: must be greater than 0, got -0.1"),
        (["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
        (["--model", "vgg16"], "argument --model: invalid choice: 'vgg16'"),
        (["--pretrained", "maybe"], "argument --pretrained: expected true or false, got 'maybe'"),
        (["--epochs", "ten"], "argument --epochs: expected an integer, got 'ten'"),
        (["--debug-collections", "activations"], "argument --debug-collections: choose from"),
    ],
)
def test_bad_hyperparameters_fail_in_one_line_with_failure_file(clean_env, tmp_path, capsys, argv, message):
    clean_env.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        get_args_parser().parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert message in (tmp_path / "output" / "failure").read_text()
