"""`python -m pyrunc.shim`: the same command line as containerd-shim-pyrunc-v1 (the runc shim)."""

from pyrunc.shim.runc_shim import main

main()
