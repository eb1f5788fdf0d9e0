"""``python -m distillset``: the command line, also as torchrun's module (``torchrun -m distillset distill``)."""

from distillset.cli import main

if __name__ == "__main__":
    main()
