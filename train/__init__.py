"""train: the command-line stages (gather, fit, evaluate, clean, push). Each module has main(argv) -> int."""
