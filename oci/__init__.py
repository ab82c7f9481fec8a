"""What faces the OCI runtime: runc, bundles, mounts, processes and their stdio."""
