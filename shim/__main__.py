"""`python -m pyrunc.shim`: the same command line as containerd-shim-pyrunc-v1."""

from pyrunc.shim.cli import main

main()
