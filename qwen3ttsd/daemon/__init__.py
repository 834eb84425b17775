"""The heavy daemon: socket activation, RPC server, GPU scheduler. Imports torch lazily."""
