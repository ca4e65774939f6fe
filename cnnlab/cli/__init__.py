"""The `cnnlab` command line. Thin: a command parses, composes the config, calls one library
function and prints. `cli.app` holds the Typer app; `cli.main` imports every command module (which
registers it) and is the entry point. torch, torchvision, pandas and Hydra are imported inside the
commands, so `cnnlab --help` stays fast."""
