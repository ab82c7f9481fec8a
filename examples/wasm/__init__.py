"""containerd-shim-pywasm-v1: WebAssembly through wasmtime (shim.py, and runner.py per task)."""
