"""Training and evaluation commands: fer-train, fer-eval, fer-kfold, fer-ablation, fer-compare."""


def console_script(main):
    """Entry point for a ``main(argv)`` that returns results (for programmatic use): exit status 0."""
    def entry_point() -> int:
        main()
        return 0
    return entry_point
