"""The soak (`make soak`): too long for `make test`, so collected only with PYRUNC_SOAK=1."""
