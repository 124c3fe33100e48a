"""Arguments shared by the commands that use a trained model folder (predict-class, restore, check-input)."""


def add_model_arguments(parser) -> None:
    """``-m`` model folder, ``-f`` folds, ``-chk`` checkpoint, as nnU-Net's own predict commands name them."""
    parser.add_argument("-m", "--model", required=True,
                        help="trained model folder <Trainer>__<Plans>__<configuration> (plans.json, dataset.json, "
                             "fold_X/)")
    parser.add_argument("-f", "--folds", nargs="+", default=None,
                        help="folds to use (default: every fold_X that has the checkpoint)")
    parser.add_argument("-chk", "--checkpoint", default="checkpoint_final.pth")
